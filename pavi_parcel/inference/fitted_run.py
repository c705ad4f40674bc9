"""A finished fit on disk, read-only: config, posterior, model state and seeds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.fingerprints.new_subjects import default_seeds
from pavi_parcel.fingerprints.split import is_split
from pavi_parcel.io.layout import config_path, fingerprint_store_path, posterior_path
from pavi_parcel.settings.compose import load_settings
from pavi_parcel.settings.schema import RunSettings
from pavi_parcel.spaces import Space
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import Posterior, read_posterior


def load_model_state(path) -> dict[str, Any]:
    """Read ``model_dir/model_state.pt`` (written by :func:`pavi_parcel.inference.training.fit_model`)."""
    return torch.load(path, map_location="cpu", weights_only=False)


@dataclass
class FittedRun:
    """What :func:`apply_subjects` reads from a trained run (read-only).

    Attributes
    ----------
    out_dir : Path
    settings : RunSettings
        The settings of the fit (``model/config.yaml``).
    posterior : Posterior
        The training posterior without its per-subject probabilities.
    model_state : dict
        ``model/model_state.pt``.
    seed_index : ndarray of int64, shape (D,)
        Seed vertices (voxels) of the training fingerprints, in the full space.
    top_fraction : float
        Binarisation of the training fingerprints (0 = continuous).
    split : str
        How the training sessions were split into pseudo-sessions (``none``, ``halves`` or
        ``runs``, :mod:`pavi_parcel.fingerprints.split`); new subjects are split the same way.
    """

    out_dir: Path
    settings: RunSettings
    posterior: Posterior
    model_state: dict
    seed_index: np.ndarray
    top_fraction: float
    split: str = "none"

    @property
    def space(self) -> Space:
        return self.posterior.space


def load_fitted_run(out_dir: Path) -> FittedRun:
    """Read a trained run's config, posterior, model state and seeds; error if it is not a fitted run."""
    out_dir = Path(out_dir)
    needed = [config_path(out_dir), posterior_path(out_dir), out_dir / "model" / "model_state.pt"]
    missing = [p.relative_to(out_dir).as_posix() for p in needed if not p.is_file()]
    if not out_dir.is_dir() or missing:
        got = "no such folder" if not out_dir.is_dir() else f"no {', '.join(missing)}"
        raise BadInputError(f"OUT_DIR {out_dir} is not a fitted run", "the output folder of a finished "
                            "`pavi-parcel fit` (model/config.yaml, model/posterior.h5, model/model_state.pt)",
                            got, f"run `pavi-parcel fit BIDS_DIR {out_dir}` to the end first, or pass its OUT_DIR")
    settings = load_settings(config_path(out_dir))
    post = read_posterior(posterior_path(out_dir), subjects=False)
    try:
        state = load_model_state(out_dir / "model" / "model_state.pt")
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise BadInputError(f"Cannot read {out_dir / 'model' / 'model_state.pt'}",
                            "a model state written by `pavi-parcel fit`", exc.__class__.__name__,
                            "rerun `pavi-parcel fit` to rebuild it") from exc
    index = np.asarray(state.get("vertex_index", post.vertex_index))
    if not np.array_equal(index, post.vertex_index) or tuple(state["mu"].shape) != post.group_profiles.shape:
        raise BadInputError(f"model/model_state.pt and model/posterior.h5 of {out_dir} disagree",
                            "files written by the same fit", "other vertices or networks",
                            "rerun `pavi-parcel fit` to rebuild them")
    n_seeds = int(state["mu"].shape[1])
    top_fraction = settings.fingerprints.top_fraction
    chosen = settings.fingerprints.split  # what the fit applied, should the store be gone
    split = "none" if not is_split(post.sessions) else chosen if chosen in ("halves", "runs") else "runs"
    store_path = training_store(settings, out_dir)
    if store_path.exists():
        with FingerprintStore(store_path) as store:
            if not np.array_equal(store.vertex_index, post.vertex_index):
                raise BadInputError(f"The fingerprint store {store_path} does not belong to this fit",
                                    f"{post.vertex_index.size} vertices as in model/posterior.h5",
                                    f"{store.n_vertices} vertices", "rerun `pavi-parcel fit` with the same settings")
            seeds = np.asarray(store.seed_index, dtype=np.int64)
            split = str(store.settings.get("split", split))
        with h5py.File(store_path, "r") as h5:
            top_fraction = float(h5.attrs.get("top_fraction", top_fraction))
    else:  # work/ was cleaned: the default seeds follow from the fitted vertices
        seeds = default_seeds(post.vertex_index, post.space, settings.fingerprints)
    if seeds.size != n_seeds:
        raise BadInputError(f"Cannot recover the seeds of the fit in {out_dir}", f"{n_seeds} seeds",
                            f"{seeds.size}", f"restore {store_path} (deleted or rebuilt since the fit)")
    return FittedRun(out_dir, settings, post, state, seeds, top_fraction, split)


def training_store(settings: RunSettings, out_dir: Path) -> Path:
    """The fingerprint store of a fit: under its ``work_dir``, or ``OUT_DIR/work`` (where OUT_DIR is now)."""
    return fingerprint_store_path(settings.work_dir if settings.work_dir is not None else Path(out_dir) / "work")

