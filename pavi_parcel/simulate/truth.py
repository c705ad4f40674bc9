"""The planted answers of a simulation: :class:`Truth`, stored as ``truth/labels.npz`` + ``truth/truth.json``.

Written by :func:`pavi_parcel.simulate.simulate_dataset` and
:func:`~pavi_parcel.simulate.simulate_fingerprint_store`; read by ``pavi-parcel validate``
and the benchmarks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pavi_parcel import __version__
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.spaces import Space, space_from_attrs

TRUTH_LABELS = "labels.npz"
TRUTH_META = "truth.json"
TRUTH_NESTING = "nesting.json"


@dataclass
class Truth:
    """Planted answers of a simulation.

    Attributes
    ----------
    group_labels : ndarray of int16, shape (n_total,)
        Group layout, 1..K; 0 = medial wall / outside the brain.
    subject_labels : dict of str -> ndarray of int16, shape (n_total,)
        Each subject's labels (keys without ``sub-``), same convention.
    names : list of str
        Network names for labels 1..K.
    space : Space
    colors : ndarray of uint8, shape (K, 3)
    sessions : list of str
    settings : dict
        The simulation settings, the achieved deviation and motion level per subject.
    """

    group_labels: np.ndarray
    subject_labels: dict[str, np.ndarray]
    names: list[str]
    space: Space
    colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.uint8))
    sessions: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        return list(self.subject_labels)

    @property
    def n_networks(self) -> int:
        return len(self.names)


def write_truth(truth_dir: Path, truth: Truth) -> Path:
    """Save a :class:`Truth` as ``labels.npz`` + ``truth.json`` in ``truth_dir``."""
    truth_dir = Path(truth_dir)
    truth_dir.mkdir(parents=True, exist_ok=True)
    subjects = truth.subjects
    stacked = np.stack([truth.subject_labels[s] for s in subjects]) if subjects else \
        np.zeros((0, truth.space.n_total), dtype=np.int16)
    with atomic_write(truth_dir / TRUTH_LABELS) as tmp:
        np.savez_compressed(tmp, group_labels=truth.group_labels.astype(np.int16),
                            subject_labels=stacked.astype(np.int16), subjects=np.asarray(subjects, dtype=str))
    space = truth.space
    meta = {"space": space.name, "n_total": space.n_total,
            "grid_shape": list(space.grid_shape) if space.grid_shape else None,
            "affine": np.asarray(space.affine).tolist() if space.affine is not None else None,
            "names": truth.names, "colors": np.asarray(truth.colors).astype(int).tolist(),
            "sessions": truth.sessions, "settings": truth.settings, "version": __version__}
    with atomic_write(truth_dir / TRUTH_META) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return truth_dir


def load_truth(truth_dir: str | Path) -> Truth:
    """Read the planted answers written by :func:`simulate_dataset` or :func:`simulate_fingerprint_store`.

    Parameters
    ----------
    truth_dir : str or Path
        The ``truth/`` folder (``labels.npz`` and ``truth.json``).
    """
    truth_dir = Path(truth_dir)
    if not (truth_dir / TRUTH_META).is_file() or not (truth_dir / TRUTH_LABELS).is_file():
        raise BadInputError(f"No simulation truth in {truth_dir}", f"{TRUTH_META} and {TRUTH_LABELS}",
                            "missing files", "pass the truth/ folder written by pavi-parcel simulate")
    meta = json.loads((truth_dir / TRUTH_META).read_text())
    with np.load(truth_dir / TRUTH_LABELS) as npz:
        group, stacked, subjects = npz["group_labels"], npz["subject_labels"], [str(s) for s in npz["subjects"]]
    return Truth(group_labels=group, subject_labels={s: stacked[i] for i, s in enumerate(subjects)},
                 names=list(meta["names"]), space=space_from_attrs(meta),
                 colors=np.asarray(meta["colors"], dtype=np.uint8), sessions=list(meta["sessions"]),
                 settings=dict(meta["settings"]))


def write_nesting(truth_dir: Path, parents: dict[int, list[int]]) -> Path:
    """Save planted parents, ``{K_coarse: [parent label 1..K_coarse of each planted label 1..K]}``."""
    path = Path(truth_dir) / TRUTH_NESTING
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({str(k): list(map(int, v)) for k, v in parents.items()}, indent=2) + "\n")
    return path


def load_nesting(truth_dir: str | Path) -> dict[int, np.ndarray]:
    """Planted parents by coarse K (empty when the simulation planted no nesting).

    Returns
    -------
    dict of int -> ndarray of int, shape (K,)
        ``parents[k][l - 1]`` is the coarse label (1..k) of planted label ``l``.
    """
    path = Path(truth_dir) / TRUTH_NESTING
    if not path.is_file():
        return {}
    return {int(k): np.asarray(v, dtype=np.int64) for k, v in json.loads(path.read_text()).items()}


def coarsened(truth: Truth, parents: np.ndarray, names: list[str] | None = None) -> Truth:
    """The truth at a coarser scale: every label replaced by its planted parent (0 stays 0)."""
    lookup = np.concatenate([[0], np.asarray(parents, dtype=np.int16)])
    k = int(lookup.max())
    return Truth(lookup[truth.group_labels], {s: lookup[v] for s, v in truth.subject_labels.items()},
                 names or [f"{i:02d}" for i in range(1, k + 1)], truth.space, np.zeros((0, 3), dtype=np.uint8),
                 truth.sessions, truth.settings)


__all__ = ["TRUTH_LABELS", "TRUTH_META", "TRUTH_NESTING", "coarsened", "load_nesting", "write_nesting",
           "Truth", "load_truth", "write_truth"]
