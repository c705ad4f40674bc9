"""The fitted parcellation on disk: ``model/posterior.h5``.

Posterior store, ``OUT_DIR/model/posterior.h5``::

    /subject_probs   float32 (n_subjects, n_vertices, K)   q(y_{s,n} = l)
    /group_probs     float32 (n_vertices, K)               group atlas (population label probabilities)
    /group_profiles  float32 (K, D)                        mu_l
    /vertex_index, /subjects, /sessions, space attrs as in the fingerprint store
    attrs            n_networks, method, settings (JSON), version
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pavi_parcel import __version__
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.io.h5 import decode_attr, open_h5, read_labels, write_labels
from pavi_parcel.io.layout import posterior_path
from pavi_parcel.spaces import Space, space_from_attrs


@dataclass
class Posterior:
    """Fitted parcellation, as saved in ``model/posterior.h5``.

    Attributes
    ----------
    subject_probs : ndarray of shape (n_subjects, n_vertices, K)
    group_probs : ndarray of shape (n_vertices, K)
    group_profiles : ndarray of shape (K, D)
    subjects, sessions : list of str
    vertex_index : ndarray of shape (n_vertices,)
    space : Space
    attrs : dict
        n_networks, method, settings and any extra scalars the fit saved.
    """

    subject_probs: np.ndarray
    group_probs: np.ndarray
    group_profiles: np.ndarray
    subjects: list[str]
    sessions: list[str]
    vertex_index: np.ndarray
    space: Space
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_networks(self) -> int:
        return int(self.group_probs.shape[1])


def write_posterior(path: Path, posterior: Posterior, subject_rows: Callable[[int], np.ndarray] | None = None) -> None:
    """Save a :class:`Posterior` atomically (chunked per subject, gzip).

    With ``subject_rows``, ``posterior.subject_probs`` is ignored and subject ``s``'s
    probabilities, shape (n_vertices, K), are ``subject_rows(s)``, written one subject at a
    time (a cohort's maps never all in memory).
    """
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        if subject_rows is None:
            probs = np.asarray(posterior.subject_probs, dtype=np.float32)
            h5.create_dataset("subject_probs", data=probs, compression="gzip", compression_opts=1,
                              chunks=(1,) + probs.shape[1:] if probs.size else None)
        else:
            shape = (len(posterior.subjects), len(posterior.vertex_index), posterior.n_networks)
            rows = h5.create_dataset("subject_probs", shape=shape, dtype=np.float32, compression="gzip",
                                     compression_opts=1, chunks=(1,) + shape[1:] if shape[0] else None)
            for s in range(shape[0]):
                rows[s] = np.asarray(subject_rows(s), dtype=np.float32)
        h5.create_dataset("group_probs", data=np.asarray(posterior.group_probs, dtype=np.float32))
        h5.create_dataset("group_profiles", data=np.asarray(posterior.group_profiles, dtype=np.float32))
        h5.create_dataset("vertex_index", data=np.asarray(posterior.vertex_index, dtype=np.int64))
        write_labels(h5, "subjects", posterior.subjects)
        write_labels(h5, "sessions", posterior.sessions)
        posterior.space.to_attrs(h5.attrs)
        for key, value in {**posterior.attrs, "n_networks": posterior.n_networks,
                           "version": __version__}.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value


def read_posterior(path: Path, subjects: bool = True) -> Posterior:
    """Load a posterior; ``subjects=False`` skips the (large) per-subject probabilities."""
    with open_h5(Path(path)) as h5:
        probs = h5["subject_probs"][()] if subjects else np.empty((0,) + h5["subject_probs"].shape[1:],
                                                                   dtype=np.float32)
        return Posterior(
            subject_probs=probs, group_probs=h5["group_probs"][()],
            group_profiles=h5["group_profiles"][()], subjects=read_labels(h5, "subjects"),
            sessions=read_labels(h5, "sessions"), vertex_index=h5["vertex_index"][()],
            space=space_from_attrs(h5.attrs),
            attrs={k: decode_attr(v) for k, v in h5.attrs.items()
                   if k not in ("space", "n_total", "grid_shape", "affine")})


def fitted_posterior(out_dir: Path) -> Path:
    """``OUT_DIR/model/posterior.h5`` of a fitted run.

    Raises
    ------
    BadInputError
        The run has no posterior (not fitted yet, or not a pavi-parcel OUT_DIR).
    """
    path = posterior_path(out_dir)
    if not path.is_file():
        raise BadInputError(f"No fitted model in {out_dir}", "model/posterior.h5", "no such file",
                            f"run `pavi-parcel fit BIDS_DIR {out_dir}` first")
    return path


def read_subject_probs(path: Path, subject: int) -> np.ndarray:
    """One subject's label probabilities, shape (n_vertices, K), without loading the cohort."""
    with open_h5(Path(path)) as h5:
        return h5["subject_probs"][subject]


__all__ = ["Posterior", "fitted_posterior", "read_posterior", "read_subject_probs", "write_posterior"]
