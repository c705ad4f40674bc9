"""The closed-form baselines run on a store: VB-EM (``fit.method=vbem``) and group k-means, as fits.

The algorithms live in :mod:`pavi_parcel.model.baselines`; this module gives their results the
shape of any other fit: a :class:`~pavi_parcel.stores.posterior.Posterior` and a model state
that :func:`pavi_parcel.model.new_subjects.infer_subjects` can apply to new subjects (the
coordinate-ascent encoders, unit gains).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from pavi_parcel.model.baselines import ParcellationResult, fit_vbem
from pavi_parcel.model.potts import smooth_maps
from pavi_parcel.model.subject_data import SubjectReader
from pavi_parcel.settings.schema import FitSettings, ModelSettings
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import Posterior

from .calibration import pair_evidence, session_pairs
from .result import FitResult
from .smoothing import SELECTION_SUBJECTS, choose_from_evidence, potts_neighbours, smoothing_wanted


def as_posterior(result: ParcellationResult, store: FingerprintStore, attrs: dict[str, Any] | None = None) -> Posterior:
    """A baseline's result on ``store`` as a :class:`Posterior` (for ``write_posterior``)."""
    return Posterior(subject_probs=np.asarray(result.subject_probs, dtype=np.float32),
                     group_probs=np.asarray(result.group_probs, dtype=np.float32),
                     group_profiles=np.asarray(result.group_profiles, dtype=np.float32),
                     subjects=list(store.subjects), sessions=list(store.sessions),
                     vertex_index=store.vertex_index, space=store.space,
                     attrs={"method": result.method, **(attrs or {})})


def run_vbem(store: FingerprintStore, model: ModelSettings, fit: FitSettings, seed: int) -> FitResult:
    """VB-EM of the MS-HBM on a store (``fit.max_iter`` iterations at most, ``fit.tol`` relative)."""
    prior = 1.0 if model.theta_prior == "auto" else float(model.theta_prior)
    result = fit_vbem(store, model.n_networks, seed=seed, max_iter=fit.max_iter, tol=fit.tol, theta_prior=prior,
                      progress=True)
    smoothing = {"beta": 0.0, "gamma": 1.0, "method": "off"}
    neighbours = potts_neighbours(store, torch.device("cpu")) if smoothing_wanted(model) else None
    if neighbours is not None:  # the same Potts prior as PAVI's maps, chosen by the same rule
        smoothing = vbem_potts(result, store, model, neighbours)
        if smoothing["beta"] > 0:
            for s in range(store.n_subjects):
                unary = torch.log(torch.as_tensor(result.subject_probs[s]).clamp_min(1e-12))[None]
                result.subject_probs[s] = smooth_maps(unary, neighbours, smoothing["beta"], smoothing["gamma"])[0]
    posterior = as_posterior(result, store, {"n_networks": model.n_networks, "potts": smoothing})
    extra = result.extra
    group = np.clip(np.asarray(result.group_probs, dtype=np.float64), 1e-12, None)
    state = {"method": "vbem", "mu": torch.as_tensor(np.asarray(result.group_profiles, dtype=np.float32)),
             "kappa": float(np.mean(extra.get("kappa", 1.0))), "sigma": float(np.mean(extra.get("sigma", 1.0))),
             "eps": float(np.mean(extra.get("eps", 1.0))), "dim": float(posterior.group_profiles.shape[1] - 1),
             "log_prior": torch.as_tensor(np.log(group / group.sum(1, keepdims=True)), dtype=torch.float32),
             "label_encoder": None, "subject_encoder": None, "encoder_iterations": 2,
             "refine_steps": fit.refine_steps, "potts_beta": smoothing["beta"], "potts_gamma": smoothing["gamma"],
             "vertex_index": np.asarray(posterior.vertex_index),
             "n_networks": model.n_networks, "subjects": list(posterior.subjects), "model_settings": model.to_dict()}
    return FitResult(posterior, state, [{"step": float(i + 1), "seconds": t, "elbo": v}
                                        for i, (t, v) in enumerate(result.trace)])


@torch.no_grad()
def vbem_potts(result: ParcellationResult, store: FingerprintStore, model: ModelSettings,
               neighbours: torch.Tensor) -> dict:
    """Potts strength of VB-EM's maps: the fixed setting, or chosen across sessions as PAVI's.

    VB-EM's per-session posterior of a vertex is ``softmax(log theta + kappa x_t . E[nu_t])``
    and ``kappa x_t' . E[nu_t']`` the other session's log likelihood, as in
    :func:`pavi_parcel.inference.smoothing.choose_potts_beta`.
    """
    if model.potts_beta != "auto":
        return {"beta": float(model.potts_beta), "gamma": 1.0, "method": "fixed"}
    pairs = session_pairs(store.session_mask, SELECTION_SUBJECTS)
    if len(pairs) == 0:
        return {"beta": 0.0, "gamma": 1.0, "method": "none"}
    kappa = float(np.mean(result.extra["kappa"]))
    log_theta = torch.log(torch.as_tensor(np.asarray(result.extra["theta"], dtype=np.float32)).clamp_min(1e-12))
    e_nu = torch.as_tensor(result.extra["session_profiles"])
    reader = SubjectReader(store, torch.device("cpu"))

    def per_subject(s: int) -> torch.Tensor:  # (T, N, K)
        data = reader(s)
        return kappa * data.dots(e_nu[s]) * data.valid[..., None]

    return choose_from_evidence(pair_evidence(pairs, per_subject), log_theta[None].expand(len(pairs), -1, -1),
                                lambda e, prior, n: torch.log_softmax(prior + e, -1), 1.0, neighbours)


__all__ = ["as_posterior", "run_vbem", "vbem_potts"]
