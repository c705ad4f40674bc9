"""Passes of fingerprints through a guide: the minibatch ELBO, whole-subject passes, calibration.

:func:`batch_elbo` is what a training step differentiates; :func:`subject_pass` streams one
subject's vertices patch by patch (exact ELBO terms, label probabilities, refreshed
encodings); :func:`calibrate_labels` sets the label encoder's calibrated weights from the
per-session evidence of :func:`subject_evidence`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pavi_parcel.model.guide import PaviGuide
from pavi_parcel.model.hierarchy import PlateScale, dirichlet_expected_log, local_elbo, theta_term

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
        if guide.settings.theta_counts == "likelihood" and isinstance(guide, PaviGuide):
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








__all__ = ["TERM_NAMES", "batch_elbo", "full_elbo", "subject_evidence", "subject_pass"]
