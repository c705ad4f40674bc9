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
from pavi_parcel.settings.schema import FitSettings, ModelSettings
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import Posterior

from .result import FitResult


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
    posterior = as_posterior(result, store, {"n_networks": model.n_networks})
    extra = result.extra
    group = np.clip(np.asarray(result.group_probs, dtype=np.float64), 1e-12, None)
    state = {"method": "vbem", "mu": torch.as_tensor(np.asarray(result.group_profiles, dtype=np.float32)),
             "kappa": float(np.mean(extra.get("kappa", 1.0))), "sigma": float(np.mean(extra.get("sigma", 1.0))),
             "eps": float(np.mean(extra.get("eps", 1.0))), "dim": float(posterior.group_profiles.shape[1] - 1),
             "log_prior": torch.as_tensor(np.log(group / group.sum(1, keepdims=True)), dtype=torch.float32),
             "label_encoder": None, "subject_encoder": None, "encoder_iterations": 2,
             "refine_steps": fit.refine_steps, "vertex_index": np.asarray(posterior.vertex_index),
             "n_networks": model.n_networks, "subjects": list(posterior.subjects), "model_settings": model.to_dict()}
    return FitResult(posterior, state, [{"step": float(i + 1), "seconds": t, "elbo": v}
                                        for i, (t, v) in enumerate(result.trace)])


__all__ = ["as_posterior", "run_vbem"]
