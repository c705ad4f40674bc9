"""Parcellating new subjects with a fitted model, without refitting it.

The shared encoders of the fit (``model_state.pt``, written by :func:`pavi_parcel.inference.training.fit_model`)
encode each new subject from its fingerprints and label its vertices; used by ``pavi-parcel
apply`` and by validation's per-session maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .guide import SubjectEncoder
from .labels import LabelEncoder, cavity_evidence


def _check_compatible(model_state: dict[str, Any], store) -> None:
    """New subjects' store must use the training vertices and seeds."""
    from pavi_parcel.exceptions import BadInputError

    trained = np.asarray(model_state.get("vertex_index", store.vertex_index))
    if len(trained) != store.n_vertices or not np.array_equal(trained, store.vertex_index):
        raise BadInputError("New subjects' fingerprints do not match the fitted model",
                            f"{len(trained)} vertices as in the training store", f"{store.n_vertices} vertices",
                            "compute the new subjects' fingerprints with the same space and settings")
    d = int(model_state["mu"].shape[1])
    if store.n_seeds != d:
        raise BadInputError("New subjects' fingerprints do not match the fitted model", f"{d} seeds",
                            f"{store.n_seeds} seeds", "use the seeds of the training run (fingerprints.seeds)")




@torch.no_grad()
def infer_subjects(model_state: dict[str, Any], fingerprints, refine_steps: int | None = None) -> np.ndarray:
    """Parcellate new subjects with the fitted model, without refitting: a forward pass of the
    shared encoders plus ``refine_steps`` refinement passes over each subject's vertices.

    Parameters
    ----------
    model_state : dict
        Contents of ``model_state.pt``: ``mu`` (K, D), ``kappa``, ``sigma``, ``eps``, ``dim``,
        ``log_prior`` (N, K) (log of the group atlas, the posterior predictive of theta),
        ``label_encoder`` and ``subject_encoder`` weights (None = coordinate-ascent weights),
        ``encoder_iterations``, ``refine_steps``, ``vertex_index``.
    fingerprints : ndarray of shape (n_subjects, T, N, D), sequence of (T, N, D) arrays, or FingerprintStore
        Demeaned unit fingerprints on the training vertices (same rows as ``vertex_index``) and
        the training seeds; a missing session is all zeros.
    refine_steps : int, optional
        Refinement passes; ``model_state['refine_steps']`` by default.

    Returns
    -------
    ndarray of float32, shape (n_subjects, N, K)
        q(y_{s,n} = l) for every new subject, networks in the fitted (group) order.
    """
    from .hierarchy import Concentrations

    mu = torch.as_tensor(model_state["mu"], dtype=torch.float32)
    k_net = mu.shape[0]
    conc = Concentrations(*(torch.tensor(float(model_state[k])) for k in ("kappa", "sigma", "eps")))
    dim = float(model_state["dim"])
    log_prior = torch.as_tensor(model_state["log_prior"], dtype=torch.float32)
    label_encoder, subject_encoder = LabelEncoder(k_net), SubjectEncoder(int(model_state.get("encoder_iterations", 2)))
    if model_state.get("label_encoder") is not None:
        label_encoder.load_state_dict(model_state["label_encoder"])
    if model_state.get("subject_encoder") is not None:
        subject_encoder.load_state_dict(model_state["subject_encoder"])
    n_refine = int(model_state.get("refine_steps", 2) if refine_steps is None else refine_steps)
    if hasattr(fingerprints, "read") and hasattr(fingerprints, "n_subjects"):
        _check_compatible(model_state, fingerprints)
        items = (fingerprints.read(s) for s in range(fingerprints.n_subjects))
        n_items = fingerprints.n_subjects
    else:
        items, n_items = iter(fingerprints), len(fingerprints)
    out = np.zeros((n_items, log_prior.shape[0], k_net), dtype=np.float32)
    for i, x in enumerate(items):
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))  # (T, N, D)
        valid = (x.amax(-1) > 0).to(x.dtype)  # (T, N); a demeaned non-zero row has a positive entry
        smask = valid.amax(-1) > 0  # (T,)

        def labels(q, lam: torch.Tensor | None, calibrated: bool) -> torch.Tensor:
            e_nu = mu.expand(x.shape[0], -1, -1) if q is None else q.e_nu[0]
            xe = torch.matmul(x, e_nu.transpose(-1, -2))  # (T, N, K)
            if calibrated and label_encoder.uses_cavity and q is not None:  # as the fit's reported maps
                per_session = cavity_evidence(xe[None], lam[None], q.k_nu, q.a_nu, conc.kappa,
                                              subject_encoder.data_gain, dim)[0]
            else:
                per_session = conc.kappa * xe
            evidence = (per_session * valid[..., None]).sum(0)
            return label_encoder(evidence[None], log_prior, n_sessions=valid.sum(0)[None],
                                 calibrated=calibrated).exp()[0]

        q = lam = None
        for _ in range(n_refine):  # encode with the ELBO-trained weights, as in training
            lam = labels(q, lam, False)
            stats = torch.matmul(lam.T, x)  # (T, K, D); 4x faster than the einsum
            q = subject_encoder(stats[None], smask[None], mu, conc, dim)
        out[i] = labels(q, lam, True).numpy()  # report with the calibrated weights
    return out


__all__ = ["infer_subjects"]
