"""The guide of each gradient-based method, and the optimiser of its learned parameters."""

from __future__ import annotations

import math

import torch

from pavi_parcel.model.guide import InitState, PaviGuide
from pavi_parcel.model.meanfield import MeanFieldGuide
from pavi_parcel.settings.schema import FitSettings, ModelSettings

GRADIENT_METHODS = ("pavi_e", "pavi_f", "svi")


def build_guide(init: InitState, n_subjects: int, n_sessions: int, model: ModelSettings, fit: FitSettings,
                seed: int) -> PaviGuide | MeanFieldGuide:
    """The guide of ``fit.method``: PAVI-E, PAVI-F or mean-field SVI, all from the same start."""
    if fit.method == "pavi_e":
        return PaviGuide(init, n_subjects, n_sessions, model, encoding="data")
    if fit.method == "pavi_f":
        return PaviGuide(init, n_subjects, n_sessions, model, encoding="free", encoding_dim=fit.encoding_dim, seed=seed)
    if fit.method == "svi":
        return MeanFieldGuide(init, n_subjects, n_sessions, model)
    raise ValueError(f"fit.method={fit.method!r} has no guide (one of {', '.join(GRADIENT_METHODS)})")


def make_optimizer(guide, fit: FitSettings) -> torch.optim.Optimizer:
    """Adam over the guide's learned parameters: ``fit.lr``, concentrations ``fit.lr_concentration``.

    Free unit vectors in the D-dimensional fingerprint space (the guide's ``DIRECTIONS``, mean-field
    SVI only) get ``fit.lr / sqrt(D)``: Adam moves every coordinate by about the learning rate, so
    a direction would otherwise turn by about ``lr * sqrt(D)`` per step (at D ~ 1,175, SVI's ELBO
    then fell for minutes before rising).
    """
    conc = [p for p in guide.log_conc.values() if p.requires_grad]
    directions = set(getattr(guide, "DIRECTIONS", ()))
    learned = [(n, p) for n, p in guide.named_parameters() if not n.startswith("log_conc") and p.requires_grad]
    groups = [{"params": [p for n, p in learned if n not in directions], "lr": float(fit.lr)}]
    turning = [p for n, p in learned if n in directions]
    if turning:
        groups.append({"params": turning, "lr": float(fit.lr) / math.sqrt(guide.mu.shape[-1])})
    if conc:
        groups.append({"params": conc, "lr": float(fit.lr_concentration)})
    return torch.optim.Adam(groups)


__all__ = ["GRADIENT_METHODS", "build_guide", "make_optimizer"]
