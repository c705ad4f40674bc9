"""Fixtures shared by several test folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pavi_parcel.model.planted import PlantedData, sample_dataset
from pavi_parcel.simulate.planted import write_planted_store


@pytest.fixture(scope="session")
def planted_store(tmp_path_factory) -> Callable[..., tuple[Path, PlantedData]]:
    """Factory of small planted fingerprint stores: 12 x 12 grid, D = 24, K = 4, strong signal.

    ``planted_store(n_subjects, seed, keep=None, path=None, **sampler)`` draws
    ``sample_dataset(n_subjects, 2, 4, ...)``, writes the first ``keep`` subjects (all by default)
    to ``path`` (a fresh folder by default) and returns ``(path, data)``; the same arguments give
    the same store, built once per test session.
    """
    cache: dict[tuple, tuple[Path, PlantedData]] = {}

    def make(n_subjects: int, seed: int, keep: int | None = None, path: Path | None = None,
             **sampler) -> tuple[Path, PlantedData]:
        key = (n_subjects, seed, keep, None if path is None else str(path), tuple(sorted(sampler.items())))
        if key not in cache:
            params = {"grid": (12, 12), "n_seeds": 24, "kappa": 25.0, "eps": 150.0, "sigma": 300.0, **sampler}
            data = sample_dataset(n_subjects, 2, 4, seed=seed, **params)
            kept = data if keep is None else type(data)(data.x[:keep], data.labels[:keep], data.group_labels,
                                                         data.mu, data.grid_shape)
            target = path if path is not None else tmp_path_factory.mktemp("planted") / "fp.h5"
            cache[key] = (write_planted_store(target, kept), data)
        return cache[key]

    return make
