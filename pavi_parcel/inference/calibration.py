"""Calibration of the label posteriors against an atlas prior, for cohorts without two sessions.

The vMF evidence ``kappa x . E[nu]`` overstates what a run says about a vertex's network
(fingerprint noise is correlated across seeds); :func:`pavi_parcel.inference.calibration.calibrate_labels`
measures by how much from subjects with two sessions. A single subject with a single run has
no second session, but a fit with ``--prior`` has the atlas: :func:`prior_temperature` tempers
the evidence so that the atlas predicts it best, and :func:`calibrate_to_prior` fixes the
label encoder with that temperature.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
import torch

from pavi_parcel.fingerprints.split import is_split
from pavi_parcel.model.guide import PaviGuide
from pavi_parcel.model.labels import consistency_temperature
from pavi_parcel.settings.schema import FitSettings, ModelSettings

from .passes import subject_evidence
from .stream import FingerprintSource

log = logging.getLogger(__name__)


def session_pairs(present: np.ndarray, n_subjects: int) -> np.ndarray:
    """Pairs of sessions that calibrate a fit: consecutive present sessions of a few subjects.

    A subject with T >= 2 sessions gives its T - 1 consecutive pairs, so that three sessions or
    more all enter the calibration (two pseudo-sessions of a split session, :mod:`pavi_parcel.fingerprints.split`,
    are one pair).

    Parameters
    ----------
    present : ndarray of bool, shape (S, T)
        Sessions with data.
    n_subjects : int
        Subjects used at most, evenly spread over those with two sessions or more.

    Returns
    -------
    ndarray of int64, shape (P, 3)
        ``(subject, session, other session)`` rows; none when no subject has two sessions.
    """
    present = np.asarray(present, dtype=bool)
    many = np.flatnonzero(present.sum(1) >= 2)
    chosen = many[np.unique(np.linspace(0, len(many) - 1, min(n_subjects, len(many))).round().astype(int))] \
        if len(many) else many
    rows = []
    for s in chosen:
        sessions = np.flatnonzero(present[s])
        rows += [(s, a, b) for a, b in zip(sessions[:-1], sessions[1:])]
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def pair_evidence(pairs: np.ndarray, per_subject: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """Evidence of every session pair, each subject's computed once.

    Parameters
    ----------
    pairs : ndarray of int, shape (P, 3)
        :func:`session_pairs` (grouped by subject).
    per_subject : callable
        ``per_subject(s) -> Tensor (T, N, K)``, a subject's per-session evidence.

    Returns
    -------
    Tensor of shape (P, 2, N, K)
    """
    rows = []
    for s in np.unique(pairs[:, 0]):
        evidence = per_subject(int(s))
        rows += [evidence[[a, b]] for a, b in pairs[pairs[:, 0] == s, 1:]]
    return torch.stack(rows)


def prior_temperature(evidence: np.ndarray, prior: np.ndarray, lo: float = 1e-4, hi: float = 4.0,
                      n_grid: int = 57) -> float:
    """Temper the vMF evidence so that the atlas predicts it best (calibration without a 2nd session).

    The vMF evidence ``kappa x . E[nu]`` overstates the information of a run (fingerprint noise
    is correlated across seeds, so D seeds carry far fewer than D independent looks); with two
    sessions :func:`pavi_parcel.model.labels.consistency_temperature` measures by how much. With
    one session, the atlas serves as the reference: ``tau`` maximises, over vertices,

        log sum_l p_n(l) softmax(tau e_n)_l  =  log [sum_l p_n(l) e^{tau e_nl} / sum_l e^{tau e_nl}] + log K,

    the log Bayes factor of the atlas prior against a flat prior under the tempered likelihood;
    equivalently, the likelihood of the atlas labels seen as noisy labels of the subject's
    networks, with the prior's own noise model (a dseg's floor). Too small a ``tau`` ignores
    evidence that agrees with the atlas; too large a ``tau`` makes confident claims against
    it at the vertices where the run is only noisy. Nothing from the truth is used.

    Parameters
    ----------
    evidence : ndarray of shape (..., N, K)
        Per-vertex evidence (summed over sessions) of one or more subjects.
    prior : ndarray of shape (N, K)
        Atlas prior probabilities.
    lo, hi : float
        Search range of ``tau`` (log grid, then golden-section refinement).
    n_grid : int

    Returns
    -------
    float
        The temperature ``tau``.
    """
    import torch

    e = torch.as_tensor(np.asarray(evidence), dtype=torch.float64).reshape(-1, np.shape(prior)[-1])
    log_p = torch.log(torch.as_tensor(np.asarray(prior), dtype=torch.float64).clamp_min(1e-12))
    log_p = log_p.expand(e.shape[0] // log_p.shape[0], *log_p.shape).reshape(e.shape)
    keep = torch.isfinite(e).all(1) & (e.abs().amax(1) > 0)
    e, log_p = e[keep], log_p[keep]
    if e.shape[0] == 0:
        return float(hi)

    def score(log_tau: float) -> float:
        z = math.exp(log_tau) * e
        return float((torch.logsumexp(z + log_p, 1) - torch.logsumexp(z, 1)).mean())

    grid = np.linspace(math.log(lo), math.log(hi), n_grid)
    values = [score(g) for g in grid]
    i = int(np.argmax(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, n_grid - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(30):  # golden-section search around the best grid point
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if score(c) >= score(d):
            b = d
        else:
            a = c
    return float(math.exp(0.5 * (a + b)))


def calibrate_to_prior(guide, source, smask, n_subjects: int = 10) -> dict:
    """Calibrate the label encoder against the atlas prior (cohorts without two sessions).

    Used by :func:`pavi_parcel.inference.calibration.calibrate_labels` when fewer than two subjects have two
    sessions and the fit has an atlas prior: the evidence of up to ``n_subjects`` subjects is
    tempered by :func:`prior_temperature` and the label encoder fixed to
    ``tau * evidence + log prior``.

    Parameters
    ----------
    guide : PaviGuide
        With an atlas prior (``guide.atlas_prior``).
    source : FingerprintSource
    smask : Tensor of bool, shape (S, T)
        Sessions present.
    n_subjects : int

    Returns
    -------
    dict
        ``{"tau", "rho": 0.0, "n", "method": "prior"}``.
    """

    n_sub = source.store.n_subjects
    chosen = np.unique(np.linspace(0, n_sub - 1, min(n_subjects, n_sub)).round().astype(int))
    evidence = np.stack([subject_evidence(guide, source, smask, int(s)).sum(0).numpy() for s in chosen])
    tau = prior_temperature(evidence, guide.base.cpu().numpy())
    guide.label_encoder.calibrate(tau, 0.0)
    log.info("Label calibration against the atlas prior: tau=%.4f from %d subject(s)", tau, len(chosen))
    return {"tau": tau, "rho": 0.0, "n": int(len(chosen)), "method": "prior"}


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
    ``{"tau", "rho", "n", "pairs"}``, empty when fewer than two subjects have two sessions (the
    learned weights are kept). Every consecutive pair of sessions of up to ``n_subjects``
    subjects enters (:func:`session_pairs`); pseudo-sessions (:mod:`pavi_parcel.fingerprints.split`)
    count as sessions, except with an atlas prior, which calibrates single-session cohorts.
    """
    pairs = session_pairs(source.store.session_mask, n_subjects)
    chosen = np.unique(pairs[:, 0])
    atlas = getattr(guide, "atlas_prior", False)
    if len(chosen) < 2 or (atlas and is_split(source.store.sessions)):
        if atlas:  # one session: calibrate against the atlas prior
            return calibrate_to_prior(guide, source, smask, n_subjects)
        log.warning("Label calibration needs subjects with two sessions; keeping the learned weights")
        return {}
    cavity = tempers_prior and getattr(guide, "self_votes", False)  # the reported maps of PAVI-E
    evidence = pair_evidence(pairs, lambda s: subject_evidence(guide, source, smask, s, cavity))
    priors = {int(s): guide.log_prior(torch.tensor([int(s)], device=guide.mu.device), slice(None))[0].cpu()
              for s in chosen}
    log_prior = torch.stack([priors[int(s)] for s in pairs[:, 0]])
    cached = guide.lam_cache[torch.as_tensor(pairs[:, 0], device=guide.mu.device)].float().cpu()
    labels = torch.where(cached.max(-1).values > 0.9, cached.argmax(-1), torch.full_like(cached[..., 0], -1).long())
    weights = guide.label_encoder.trained_weights() if tempers_prior else (1.0, 1.0, None)
    tau, rho = consistency_temperature(evidence, log_prior, labels, weights, tempers_prior)
    guide.label_encoder.calibrate(tau, rho, tempers_prior, cavity)
    log.info("Label calibration: tau=%.4f rho=%.3f from %d session pairs of %d subjects%s", tau, rho, len(pairs),
             len(chosen), " (pseudo-sessions: the two parts of each session, fingerprints.split)"
             if is_split(source.store.sessions) else "")
    return {"tau": tau, "rho": rho, "n": int(len(chosen)), "pairs": int(len(pairs))}


def calibrating(guide, model: ModelSettings) -> bool:
    """Whether the fit calibrates its label posteriors (PAVI guides, ``model.calibration`` not none)."""
    return isinstance(guide, PaviGuide) and model.calibration != "none"


def calibrate_in_training(guide, source: FingerprintSource, smask: torch.Tensor, model: ModelSettings,
                          fit: FitSettings) -> bool:
    """The end-of-epoch calibration of training (evidence tempered alone); True when it ran."""
    if not calibrating(guide, model):
        return False
    calibrate_labels(guide, source, smask, fit.calibration_subjects, tempers_prior=False)
    return True

