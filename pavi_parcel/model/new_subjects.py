"""Parcellating new subjects with a fitted model, without refitting it.

The shared encoders of the fit (``model_state.pt``, written by :func:`pavi_parcel.inference.training.fit_model`)
encode each new subject from its fingerprints and label its vertices; used by ``pavi-parcel
apply`` and by validation's per-session maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pavi_parcel.exceptions import BadInputError

from .guide import SubjectEncoder
from .hierarchy import Concentrations, SubjectPosterior
from .labels import LabelEncoder, cavity_evidence
from .potts import smooth_maps


def _check_compatible(model_state: dict[str, Any], store) -> None:
    """New subjects' store must use the training vertices and seeds."""
    trained = np.asarray(model_state.get("vertex_index", store.vertex_index))
    if len(trained) != store.n_vertices or not np.array_equal(trained, store.vertex_index):
        raise BadInputError("New subjects' fingerprints do not match the fitted model",
                            f"{len(trained)} vertices as in the training store", f"{store.n_vertices} vertices",
                            "compute the new subjects' fingerprints with the same space and settings")
    d = int(model_state["mu"].shape[1])
    if store.n_seeds != d:
        raise BadInputError("New subjects' fingerprints do not match the fitted model", f"{d} seeds",
                            f"{store.n_seeds} seeds", "use the seeds of the training run (fingerprints.seeds)")


class TrainedEncoders:
    """The trained encoders and group model of ``model_state.pt``, applied to one subject at a time."""

    def __init__(self, model_state: dict[str, Any]):
        self.mu = torch.as_tensor(model_state["mu"], dtype=torch.float32)
        k_net = self.mu.shape[0]
        self.conc = Concentrations(*(torch.tensor(float(model_state[k])) for k in ("kappa", "sigma", "eps")))
        self.dim = float(model_state["dim"])
        self.log_prior = torch.as_tensor(model_state["log_prior"], dtype=torch.float32)
        self.labels_of = LabelEncoder(k_net)
        self.subject_of = SubjectEncoder(int(model_state.get("encoder_iterations", 2)))
        if model_state.get("label_encoder") is not None:
            self.labels_of.load_state_dict(model_state["label_encoder"])
        if model_state.get("subject_encoder") is not None:
            self.subject_of.load_state_dict(model_state["subject_encoder"])

    def labels(self, x: torch.Tensor, valid: torch.Tensor, q: SubjectPosterior | None, lam: torch.Tensor | None,
               calibrated: bool) -> torch.Tensor:
        """Label probabilities (N, K) of a subject's fingerprints ``x`` (T, N, D) given its profiles ``q``."""
        e_nu = self.mu.expand(x.shape[0], -1, -1) if q is None else q.e_nu[0]
        xe = torch.matmul(x, e_nu.transpose(-1, -2))  # (T, N, K)
        if calibrated and self.labels_of.uses_cavity and q is not None:  # as the fit's reported maps
            per_session = cavity_evidence(xe[None], lam[None], q.k_nu, q.a_nu, self.conc.kappa,
                                          self.subject_of.data_gain, self.dim)[0]
        else:
            per_session = self.conc.kappa * xe
        evidence = (per_session * valid[..., None]).sum(0)
        return self.labels_of(evidence[None], self.log_prior, n_sessions=valid.sum(0)[None],
                              calibrated=calibrated).exp()[0]

    def subject(self, x: np.ndarray, n_refine: int) -> np.ndarray:
        """One subject's reported label probabilities (N, K): ``n_refine`` passes, then the calibrated labels."""
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))  # (T, N, D)
        valid = (x.amax(-1) > 0).to(x.dtype)  # (T, N); a demeaned non-zero row has a positive entry
        smask = valid.amax(-1) > 0  # (T,)
        q = lam = None
        for _ in range(n_refine):  # encode with the ELBO-trained weights, as in training
            lam = self.labels(x, valid, q, lam, False)
            stats = torch.matmul(lam.T, x)  # (T, K, D); 4x faster than the einsum
            q = self.subject_of(stats[None], smask[None], self.mu, self.conc, self.dim)
        return self.labels(x, valid, q, lam, True).numpy()  # report with the calibrated weights


@torch.no_grad()
def infer_subjects(model_state: dict[str, Any], fingerprints, refine_steps: int | None = None,
                   neighbours: torch.Tensor | None = None) -> np.ndarray:
    """Parcellate new subjects with the fitted model, without refitting: a forward pass of the
    shared encoders plus ``refine_steps`` refinement passes over each subject's vertices.

    Parameters
    ----------
    model_state : dict
        Contents of ``model_state.pt``: ``mu`` (K, D), ``kappa``, ``sigma``, ``eps``, ``dim``,
        ``log_prior`` (N, K) (log of the group atlas, the posterior predictive of theta),
        ``label_encoder`` and ``subject_encoder`` weights (None = coordinate-ascent weights),
        ``encoder_iterations``, ``refine_steps``, ``vertex_index``.
    fingerprints : ndarray of shape (n_subjects, T, N, D), sequence of (T, N, D) arrays, or a store
        Demeaned unit fingerprints on the training vertices (same rows as ``vertex_index``) and
        the training seeds; a missing session is all zeros. A store is anything with the
        reader protocol of :class:`~.subject_data.FingerprintReader` (``read``, ``n_subjects`` ...).
    refine_steps : int, optional
        Refinement passes; ``model_state['refine_steps']`` by default.
    neighbours : LongTensor of shape (N, M), optional
        Neighbour table of the fitted vertices (:func:`pavi_parcel.model.potts.neighbour_table`):
        the maps then get the fit's Potts smoothing (``potts_beta``, ``potts_gamma``), as the
        fit's own maps did; None = per-vertex maps.

    Returns
    -------
    ndarray of float32, shape (n_subjects, N, K)
        q(y_{s,n} = l) for every new subject, networks in the fitted (group) order.
    """
    encoders = TrainedEncoders(model_state)
    n_refine = int(model_state.get("refine_steps", 2) if refine_steps is None else refine_steps)
    if hasattr(fingerprints, "read") and hasattr(fingerprints, "n_subjects"):
        _check_compatible(model_state, fingerprints)
        items = (fingerprints.read(s) for s in range(fingerprints.n_subjects))
        n_items = fingerprints.n_subjects
    else:
        items, n_items = iter(fingerprints), len(fingerprints)
    out = np.zeros((n_items, encoders.log_prior.shape[0], encoders.mu.shape[0]), dtype=np.float32)
    beta, gamma = float(model_state.get("potts_beta") or 0.0), float(model_state.get("potts_gamma", 1.0))
    for i, x in enumerate(items):
        out[i] = encoders.subject(x, n_refine)
        if neighbours is not None and beta > 0:
            unary = torch.log(torch.as_tensor(out[i]).clamp_min(1e-12))[None]
            out[i] = smooth_maps(unary, neighbours.cpu(), beta, gamma)[0].numpy()
    return out


__all__ = ["TrainedEncoders", "infer_subjects"]
