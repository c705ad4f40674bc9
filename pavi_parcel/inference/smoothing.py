"""The Potts prior on a fit's reported maps: its strength chosen across sessions, then applied.

The reported maps are the mean-field fixed point of each subject's calibrated per-vertex
posteriors under the Potts prior (:func:`pavi_parcel.model.potts.mean_field`). With
``model.potts_beta=auto`` the strength is :func:`choose_potts_beta`'s: each session's
calibrated map of a few subjects, smoothed with each candidate beta, predicts the other
session's calibrated evidence (:func:`pavi_parcel.model.potts.choose_beta`). Training then
runs without the Potts term, so the choice costs a pass over those subjects and a few
mean-field sweeps, not a slower fit; a fixed number couples the labels in training as well.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.nn import functional as F

from pavi_parcel.model.potts import choose_beta, mean_field, neighbour_table, smoothed_temperature
from pavi_parcel.settings.schema import ModelSettings
from pavi_parcel.spaces import MeshUnavailable

from .calibration import pair_evidence, session_pairs
from .passes import subject_evidence
from .stream import FingerprintSource

log = logging.getLogger(__name__)

SELECTION_SUBJECTS = 6
"""Subjects (each with two sessions, both directions) whose held-out predictions choose beta."""


def calibrated_evidence_weight(encoder) -> float:
    """Weight of one session's evidence in the calibrated label logits (``tau a``, or ``tau``)."""
    if not encoder.calibrated:
        return float(F.softplus(encoder.a_raw))
    tau = float(encoder.tau)
    return tau * float(F.softplus(encoder.a_raw)) if bool(encoder.tempers_prior > 0) else tau


@torch.no_grad()
def choose_potts_beta(guide, source: FingerprintSource, smask: torch.Tensor, neighbours: torch.Tensor,
                      n_subjects: int = SELECTION_SUBJECTS) -> dict:
    """Choose the Potts strength of the reported maps by cross-session prediction (no truth).

    Parameters
    ----------
    guide : PaviGuide or MeanFieldGuide
        PAVI: calibrated (:func:`pavi_parcel.inference.calibration.calibrate_labels`), its label
        encoder gives the per-session posteriors. Mean-field SVI, whose free label logits have no
        per-session form: ``softmax(log prior + kappa x_t . E[nu_t])``, as VB-EM's; its maps are
        then tempered back to their own confidence (``keep_confidence``), not by ``gamma``.
    source : FingerprintSource
    smask : Tensor of bool, shape (S, T)
    neighbours : LongTensor of shape (N, M)
    n_subjects : int
        Subjects with two sessions or more used (all their consecutive session pairs), evenly
        spread over the cohort.

    Returns
    -------
    dict
        ``beta``, ``gamma`` (temperature of the smoothed maps), ``scores`` (held-out log
        predictive gain per candidate, nats per vertex),
        ``n`` (session pairs used) and ``method`` (``sessions``, or ``none`` when no subject has two
        sessions: beta is then 0).
    """
    pairs = session_pairs(smask.cpu().numpy(), n_subjects)
    if len(pairs) == 0:
        log.info("Potts strength: no subject has two sessions to choose it from; maps are not smoothed")
        return {"beta": 0.0, "gamma": 1.0, "scores": {}, "n": 0, "method": "none"}
    dev = guide.mu.device
    evidence = pair_evidence(pairs, lambda s: subject_evidence(guide, source, smask, s).to(dev))
    priors = {int(s): guide.log_prior(torch.tensor([int(s)], device=dev), slice(None))[0]
              for s in np.unique(pairs[:, 0])}
    log_prior = torch.stack([priors[int(s)] for s in pairs[:, 0]])

    encoder = getattr(guide, "label_encoder", None)
    if encoder is None:  # mean-field SVI: free logits, so per-session posteriors as VB-EM's, prior + evidence
        # a temperature fitted to those posteriors would not fit SVI's own maps: these keep their confidence
        return choose_from_evidence(evidence, log_prior, lambda e, prior, n: torch.log_softmax(prior + e, -1),
                                    1.0, neighbours, keep_confidence=True)

    def labels(e: torch.Tensor, prior: torch.Tensor, n_sessions: torch.Tensor) -> torch.Tensor:
        return encoder(e, prior, n_sessions=n_sessions)

    return choose_from_evidence(evidence, log_prior, labels, calibrated_evidence_weight(encoder), neighbours)


@torch.no_grad()
def choose_from_evidence(evidence: torch.Tensor, log_prior: torch.Tensor, labels, weight: float,
                         neighbours: torch.Tensor, keep_confidence: bool = False) -> dict:
    """Potts strength and smoothed-map temperature from two sessions of a few subjects.

    Parameters
    ----------
    evidence : Tensor of shape (P, 2, N, K)
        Evidence of the two sessions of P session pairs (:func:`.calibration.session_pairs`;
        zero where a session has no data).
    log_prior : Tensor of shape (P, N, K)
        The log spatial prior of each pair's subject.
    labels : callable
        ``labels(evidence (P, N, K), log_prior (P, N, K), n_sessions (P, N)) -> log posteriors``,
        the method's calibrated per-vertex label posteriors.
    weight : float
        Weight of one session's evidence in those posteriors (its calibrated log likelihood).
    neighbours : LongTensor of shape (N, M)
    keep_confidence : bool
        The maps to smooth are not ``labels``' posteriors (mean-field SVI): no temperature is
        fitted (``gamma`` 1) and the result says ``keep_confidence`` (see
        :func:`pavi_parcel.model.potts.smooth_maps`).

    Returns
    -------
    dict
        As :func:`choose_potts_beta`.
    """
    has = evidence.abs().amax(-1) > 0  # (P, 2, N)
    unary = torch.cat([labels(evidence[:, t], log_prior, has[:, t].float()) for t in (0, 1)])  # (2P, N, K)
    heldout = weight * torch.cat([evidence[:, 1], evidence[:, 0]])
    valid = torch.cat([has.all(1), has.all(1)])
    beta, scores = choose_beta(unary, heldout, valid, neighbours)
    gamma = 1.0
    if beta > 0 and not keep_confidence:  # temper the smoothed maps so that they stay as confident as the data allow
        n = len(evidence)
        singles = torch.log(mean_field(unary, neighbours, beta).clamp_min(1e-30))
        joint = labels(evidence.sum(1), log_prior, has.sum(1).float())
        joint = torch.log(mean_field(joint, neighbours, beta).clamp_min(1e-30))
        keep = has.all(1)
        gamma = smoothed_temperature(singles[:n][keep], singles[n:][keep], joint[keep])
    shown = ", ".join(f"{b:g}: {v:+.4f}" for b, v in scores.items())
    tempered = "keep their confidence" if keep_confidence else f"tempered by {gamma:.3f}"
    log.info("Potts strength beta=%g, chosen by how well each session's smoothed map predicts the other "
             "session (%d session pairs; held-out gain per vertex %s); smoothed maps %s",
             beta, len(evidence), shown, tempered)
    chosen = {"beta": float(beta), "gamma": float(gamma), "scores": {str(k): v for k, v in scores.items()},
              "n": int(len(evidence)), "method": "sessions"}
    return chosen | {"keep_confidence": True} if keep_confidence else chosen


def potts_neighbours(store, dev: torch.device) -> torch.Tensor | None:
    """The Potts neighbour table of the store's vertices; None (and a warning) when the space has no mesh."""
    try:
        edges = store.space.edges()
    except MeshUnavailable:
        log.warning(store.space.mesh_note())
        return None
    return neighbour_table(edges, store.vertex_index, store.space.n_total).to(dev)


def smoothing_wanted(model: ModelSettings) -> bool:
    """Whether the fit needs the space's neighbours (``model.potts_beta`` auto or > 0)."""
    return model.potts_beta == "auto" or float(model.potts_beta) > 0


__all__ = ["SELECTION_SUBJECTS", "calibrated_evidence_weight", "choose_from_evidence", "choose_potts_beta",
           "potts_neighbours",
           "smoothing_wanted"]
