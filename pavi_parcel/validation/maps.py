"""What ``pavi-parcel validate`` reads from a fitted run: maps, the trained vMF, fingerprint stores.

Read-only access, one subject at a time, so validating a large cohort needs the memory of one
subject's maps and fingerprints:

* :class:`SubjectMaps`: the soft map of every training subject (``model/posterior.h5``) and of
  every subject added by ``pavi-parcel apply`` (``model/applied/sub-<label>_posterior.h5``);
* :class:`TrainedVmf`: the fitted group profiles and data concentration, to score held-out
  fingerprints (:meth:`TrainedVmf.log_likelihood`);
* :func:`subject_stores`: where each subject's training fingerprints are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.inference.fitted_run import load_model_state
from pavi_parcel.io.layout import applied_label, applied_paths, fingerprint_store_path
from pavi_parcel.model.vmf import log_vmf_normalizer
from pavi_parcel.settings.schema import RunSettings
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import Posterior, fitted_posterior, read_posterior, read_subject_probs

log = logging.getLogger(__name__)


@dataclass
class SubjectMaps:
    """Soft maps of the training subjects and of the subjects added by ``apply``.

    Attributes
    ----------
    posterior : Posterior
        ``model/posterior.h5`` without its per-subject probabilities.
    path : Path
        ``model/posterior.h5``.
    applied : dict of str -> Path
        Applied subject label -> its ``model/applied/sub-<label>_posterior.h5`` (training
        subjects excluded).
    """

    posterior: Posterior
    path: Path
    applied: dict[str, Path]

    @property
    def labels(self) -> list[str]:
        """Training subjects, then applied ones."""
        return list(self.posterior.subjects) + list(self.applied)

    def source(self, label: str) -> str:
        """``fit`` for a training subject, ``apply`` for one added by ``pavi-parcel apply``."""
        return "apply" if label in self.applied else "fit"

    def probs(self, label: str) -> np.ndarray:
        """q(y) of one subject: ndarray of float32, shape (n_vertices, K)."""
        if label in self.applied:
            return read_posterior(self.applied[label]).subject_probs[0]
        return read_subject_probs(self.path, self.posterior.subjects.index(label))


def load_subject_maps(out_dir: Path) -> SubjectMaps:
    """Read the training posterior (without subject maps) and find the applied subjects.

    Raises
    ------
    BadInputError
        No ``model/posterior.h5``, or an applied posterior on other vertices or networks.
    """
    path = fitted_posterior(out_dir)
    post = read_posterior(path, subjects=False)
    applied = {}
    for item in applied_paths(out_dir):
        label = applied_label(item)
        if label in post.subjects:
            continue
        other = read_posterior(item, subjects=False)
        if not np.array_equal(other.vertex_index, post.vertex_index) or other.n_networks != post.n_networks:
            raise BadInputError(f"{item} does not belong to this fit", f"{post.vertex_index.size} vertices and "
                                f"K = {post.n_networks} as model/posterior.h5",
                                f"{other.vertex_index.size} vertices, K = {other.n_networks}",
                                f"delete it and rerun `pavi-parcel apply` for sub-{label}")
        applied[label] = item
    return SubjectMaps(post, path, applied)


@dataclass
class TrainedVmf:
    """The fitted likelihood ``x | y = l ~ vMF(mu_l, kappa)`` on the sphere of dimension ``dim``.

    Attributes
    ----------
    state : dict
        ``model/model_state.pt`` (for :func:`pavi_parcel.model.new_subjects.infer_subjects`).
    mu : ndarray of float64, shape (K, D)
        Group network profiles (unit vectors).
    kappa : float
        Data concentration.
    dim : float
        ``D - 1``: demeaned fingerprints live on the unit sphere of a (D - 1)-dimensional subspace.
    log_norm : float
        ``log C_dim(kappa)`` (:func:`pavi_parcel.model.vmf.log_vmf_normalizer`).
    refine_steps : int
        Encoder refinement passes used when the model parcellates a subject's sessions.
    """

    state: dict[str, Any]
    mu: np.ndarray
    kappa: float
    dim: float
    log_norm: float
    refine_steps: int

    def log_likelihood(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``log p(x_n | y_n = l) = log C_dim(kappa) + kappa mu_l . x_n`` at the vertices with data.

        Parameters
        ----------
        x : ndarray of shape (n_vertices, D)
            Demeaned unit fingerprints of one session; all-zero rows mean no data.

        Returns
        -------
        loglik : ndarray of float64, shape (n_valid, K)
        valid : ndarray of bool, shape (n_vertices,)
        """
        x = np.asarray(x, dtype=np.float64)
        valid = np.abs(x).max(1) > 0
        return self.log_norm + self.kappa * (x[valid] @ self.mu.T), valid


def load_trained_vmf(out_dir: Path) -> TrainedVmf | None:
    """Read ``model/model_state.pt``; None when the fit wrote none (held-out likelihoods skipped)."""
    path = Path(out_dir) / "model" / "model_state.pt"
    if not path.is_file():
        return None
    try:
        state = load_model_state(path)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise BadInputError(f"Cannot read {path}", "a model state written by `pavi-parcel fit`",
                            exc.__class__.__name__, "rerun `pavi-parcel fit` to rebuild it") from exc
    mu = np.asarray(torch.as_tensor(state["mu"]).double().numpy())
    kappa, dim = float(state["kappa"]), float(state.get("dim", mu.shape[1] - 1))
    log_norm = float(log_vmf_normalizer(torch.tensor(kappa, dtype=torch.float64), dim))
    return TrainedVmf(state, mu, kappa, dim, log_norm, int(state.get("refine_steps", 2)))


def subject_stores(out_dir: Path, maps: SubjectMaps, settings: RunSettings | None) -> list[tuple[str, Path, int]]:
    """Training fingerprints of every subject: (label, store path, subject row), in table order.

    Training subjects are in ``work/fingerprints.h5`` (``work_dir`` of the settings when set),
    applied ones in ``work/apply/sub-<label>_fingerprints.h5``; subjects whose store is gone
    (work folder cleaned) are left out.
    """
    work = settings.work_dir if settings is not None and settings.work_dir is not None else Path(out_dir) / "work"
    out: list[tuple[str, Path, int]] = []
    training = fingerprint_store_path(work)
    if training.is_file():
        with FingerprintStore(training) as store:
            if np.array_equal(store.vertex_index, maps.posterior.vertex_index):
                rows = {s: i for i, s in enumerate(store.subjects)}
                out += [(s, training, rows[s]) for s in maps.posterior.subjects if s in rows]
            else:
                log.warning("%s has other vertices than the fit; session metrics skipped", training)
    for label in maps.applied:
        path = Path(out_dir) / "work" / "apply" / f"sub-{label}_fingerprints.h5"
        if path.is_file():
            out.append((label, path, 0))
    return out
