"""Passes of fingerprints through a guide: the minibatch ELBO, whole-subject passes, calibration.

:func:`batch_elbo` is what a training step differentiates; :func:`subject_pass` streams one
subject's vertices patch by patch (exact ELBO terms, label probabilities, refreshed
encodings); :func:`calibrate_labels` sets the label encoder's calibrated weights from the
per-session evidence of :func:`subject_evidence`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch

from .model.guide import PaviGuide
from .model.hierarchy import PlateScale, dirichlet_expected_log, local_elbo, theta_term
from .model.labels import consistency_temperature
from .stream import Block, FingerprintSource

log = logging.getLogger(__name__)

TERM_NAMES = ("likelihood", "label_prior", "label_entropy", "session", "subject", "theta", "potts")


def batch_elbo(guide, x: Block, subj: torch.Tensor, patch: int,
               session_mask: torch.Tensor, scale: PlateScale):
    """Scaled ELBO terms of a minibatch, with the label probabilities, subject factors and sums.

    The fingerprints enter through two products only, ``x . E[nu]`` (forward) and the
    label-weighted sums ``R = sum_n lambda_n x_n``; no gradient flows back through ``x``: the
    likelihood's gradient with respect to E[nu] is ``kappa R`` (exact), and the label encoder sees
    ``x . E[nu]`` as a constant input (that path's gradient vanishes at the coordinate-ascent
    fixed point the encoder is built on).

    Parameters
    ----------
    guide : PaviGuide or MeanFieldGuide
    x : Block
        Fingerprints of the batch subjects on the patch's vertices.
    subj : Tensor of int64, shape (B,)
    patch : int
    session_mask : Tensor of bool, shape (B, T)
    scale : PlateScale

    Returns
    -------
    terms : ElboTerms
    lam : Tensor of shape (B, V, K)
    q : SubjectPosterior
    sums : Tensor of shape (B, T, K, D)
        ``sum_n lambda_{s,n,l} x_{s,t,n}`` over the patch (detached).
    counted : Tensor of shape (B, V, K)
        Label probabilities entering theta's counts: ``lam`` (detached), or the prior-free
        label probabilities with ``model.theta_counts = likelihood``.
    """
    a, b = guide.patches[patch]
    verts = slice(a, b)
    conc = guide.concentrations()
    q = guide.subject_posterior(subj, session_mask)
    e_nu = q.e_nu
    valid = x.valid
    with torch.no_grad():
        xe = x.dot(e_nu.detach())  # (B, T, V, K)
    evidence = guide.label_evidence(xe, valid, subj, verts, q).sum(1)
    log_lam = guide.label_log_probs(subj, verts, evidence, valid.sum(1).to(xe.dtype))
    lam = log_lam.exp()
    beta = guide.theta_beta(verts)
    terms = local_elbo(xe, valid, lam, log_lam, dirichlet_expected_log(beta).float(), q, guide.current_mu(),
                       conc, session_mask, scale)
    with torch.no_grad():
        sums = x.weighted_sums(lam.detach())
        counted = lam.detach()
        if guide.settings.get("theta_counts", "posterior") == "likelihood" and isinstance(guide, PaviGuide):
            # theta's counts from what the data say, without the prior built from the other subjects
            counted = guide.label_encoder(evidence, torch.zeros_like(evidence), None, 0.0,
                                          valid.sum(1).to(xe.dtype)).exp()
    # zero-valued term carrying the exact likelihood gradient d/dE[nu] = kappa * sums
    terms.likelihood = terms.likelihood + scale(True, True) * (
        conc.kappa.detach() * ((e_nu - e_nu.detach()) * sums).sum(dtype=torch.float64))
    terms.theta = theta_term(beta, guide.alpha(verts), scale)
    nb = guide.neighbour_sum(subj, verts)
    if nb is not None:
        pair = (lam * nb).sum(dtype=torch.float64)
        # value: beta/2 per edge (each edge seen from both ends); gradient: beta * neighbour sum.
        terms.potts = guide.potts_beta * (pair - 0.5 * pair.detach()) * scale(True, True)
    return terms, lam, q, sums, counted


@torch.no_grad()
def subject_pass(guide, source: FingerprintSource, s: int, session_mask: torch.Tensor,
                 update: bool) -> tuple[np.ndarray, dict[str, float]]:
    """All vertices of one subject: label probabilities (N, K) and unscaled ELBO terms.

    With ``update`` the guide's closed-form state (encodings, counts) is refreshed patch by patch.
    """
    subj = torch.tensor([s], device=guide.mu.device)
    probs = np.zeros((source.store.n_vertices, guide.n_networks), dtype=np.float32)
    totals = dict.fromkeys(TERM_NAMES, 0.0)
    for p, (a, b) in enumerate(guide.patches):
        x = source.get(np.array([s]), a, b)
        terms, lam, q, sums, counted = batch_elbo(guide, x, subj, p, session_mask[subj], PlateScale())
        if update:
            guide.after_step(subj, p, sums, counted, q)
        probs[a:b] = lam[0].cpu().numpy()
        for k, v in terms.as_floats().items():
            if k in ("session", "subject"):  # subject-plate terms: once per subject, not per patch
                totals[k] = v
            elif k != "theta":
                totals[k] += v
    return probs, totals


@torch.no_grad()
def full_elbo(guide, source: FingerprintSource, session_mask: torch.Tensor) -> float:
    """Exact ELBO of the current variational parameters (a full pass, no update)."""
    total = 0.0
    for s in range(source.store.n_subjects):
        total += sum(subject_pass(guide, source, s, session_mask, update=False)[1].values())
    total += float(theta_term(guide.theta_beta(slice(None)), guide.alpha(), PlateScale()))
    return total


@torch.no_grad()
def subject_evidence(guide, source: FingerprintSource, smask: torch.Tensor, s: int,
                     cavity: bool | None = None) -> torch.Tensor:
    """Per-session vMF evidence ``kappa x_{s,t,n} . E[nu_{s,t,l}]`` of one subject, streamed patch by patch.

    ``cavity``: see :meth:`~pavi_parcel.model.guide.PaviGuide.label_evidence` (None = as the
    label encoder is calibrated).

    Returns
    -------
    Tensor of float32, shape (T, N, K), on the CPU
        Zero where a session has no data at a vertex.
    """
    subj = torch.tensor([int(s)], device=guide.mu.device)
    q = guide.subject_posterior(subj, smask[subj])
    out = torch.zeros(source.store.n_sessions, source.store.n_vertices, guide.n_networks)
    for a, b in guide.patches:
        x = source.get(np.array([s]), a, b)
        out[:, a:b] = guide.label_evidence(x.dot(q.e_nu), x.valid, subj, slice(a, b), q, cavity)[0].cpu()
    return out


@torch.no_grad()
def calibrate_labels(guide, source: FingerprintSource, smask: torch.Tensor, n_subjects: int = 10,
                     tempers_prior: bool = True) -> dict:
    """Set the label encoder's calibrated weights from subjects with two sessions (no truth used).

    See :func:`pavi_parcel.model.labels.consistency_temperature`. During training (end of each
    epoch) the temperature is on the evidence alone (``tempers_prior=False``): the labels that
    update the encodings and theta's counts keep the spatial prior at full weight. The final
    calibration, that of the reported maps and of new subjects, is on the whole logits
    (``model.calibration=consistency``, the default) or on the evidence alone
    (``consistency_evidence``). Returns
    ``{"tau", "rho", "n"}``, empty when fewer than two subjects have two sessions (the learned
    weights are kept).
    """
    both = np.flatnonzero(source.store.session_mask[:, :2].all(1)) if source.store.n_sessions >= 2 else []
    if len(both) < 2:
        if getattr(guide, "atlas_prior", False):  # one session: calibrate against the atlas prior
            from .prior_calibration import calibrate_to_prior
            return calibrate_to_prior(guide, source, smask, n_subjects)
        log.warning("Label calibration needs subjects with two sessions; keeping the learned weights")
        return {}
    chosen = both[np.linspace(0, len(both) - 1, min(n_subjects, len(both))).round().astype(int)]
    cavity = tempers_prior and getattr(guide, "self_votes", False)  # the reported maps of PAVI-E
    evidence = torch.stack([subject_evidence(guide, source, smask, int(s), cavity)[:2] for s in chosen])
    log_prior = torch.cat([guide.log_prior(torch.tensor([int(s)], device=guide.mu.device), slice(None)).cpu()
                           for s in chosen])
    cached = guide.lam_cache[torch.as_tensor(chosen, device=guide.mu.device)].float().cpu()
    labels = torch.where(cached.max(-1).values > 0.9, cached.argmax(-1), torch.full_like(cached[..., 0], -1).long())
    weights = guide.label_encoder.trained_weights() if tempers_prior else (1.0, 1.0, None)
    tau, rho = consistency_temperature(evidence, log_prior, labels, weights, tempers_prior)
    guide.label_encoder.calibrate(tau, rho, tempers_prior, cavity)
    log.info("Label calibration: tau=%.4f rho=%.3f from %d subjects", tau, rho, len(chosen))
    return {"tau": tau, "rho": rho, "n": int(len(chosen))}


def calibrating(guide, model: Mapping[str, Any]) -> bool:
    """Whether the fit calibrates its label posteriors (PAVI guides, ``model.calibration`` not none)."""
    return isinstance(guide, PaviGuide) and str(model.get("calibration", "consistency")) != "none"


def calibrate_in_training(guide, source: FingerprintSource, smask: torch.Tensor, model: Mapping[str, Any],
                          fit: Mapping[str, Any]) -> bool:
    """The end-of-epoch calibration of training (evidence tempered alone); True when it ran."""
    if not calibrating(guide, model):
        return False
    calibrate_labels(guide, source, smask, int(fit["calibration_subjects"]), tempers_prior=False)
    return True


__all__ = ["TERM_NAMES", "batch_elbo", "calibrate_in_training", "calibrate_labels", "calibrating", "full_elbo",
           "subject_evidence", "subject_pass"]
