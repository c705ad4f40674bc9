"""The Potts label prior: neighbour tables, mean-field smoothing, and beta chosen from the data.

The Potts term ``beta * sum_{(n, m) edges} [y_n = y_m]`` says that neighbouring vertices tend
to share a network. Neighbours are given as a padded table of store rows; the edges come from
the space (:meth:`pavi_parcel.spaces.Space.edges`).

With a fixed ``model.potts_beta`` the term enters training in mean-field form,
``beta * sum_edges lambda_n . lambda_m`` (the label encoder receives the sum of the neighbours'
current label probabilities). The reported maps, of the fit and of ``apply``, are the
mean-field fixed point (:func:`mean_field`) of the calibrated per-vertex posteriors under the
Potts prior, ``q_n ∝ exp(u_n + beta * sum_{m ~ n} q_m)``.

With ``model.potts_beta=auto`` (the default), beta is chosen without ground truth by
cross-validation across sessions (:func:`choose_beta`): the map of one session, smoothed with
beta, predicts the other session's evidence; the beta whose smoothed maps predict best wins.
Smoothing a map whose networks are spatially coherent removes noise that the other session
does not share, so it predicts better; smoothing a map whose true structure is finer than its
neighbourhood removes real detail that the other session sees, so it predicts worse and beta
stays near zero. The held-out score is a log predictive probability (a proper scoring rule),
so a beta that makes the maps overconfident is penalised as well.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def neighbour_table(edges: np.ndarray, vertex_index: np.ndarray, n_total: int) -> torch.Tensor:
    """Neighbours of every modelled vertex as store rows.

    Parameters
    ----------
    edges : ndarray of int, shape (E, 2)
        Neighbouring points in the full space (either direction; duplicates allowed).
    vertex_index : ndarray of shape (N,)
        Full-space index of each store row.
    n_total : int
        Size of the full space.

    Returns
    -------
    LongTensor of shape (N, M)
        Row indices of each vertex's neighbours, padded with -1; edges to points outside the
        store are left out.
    """
    vertex_index = np.asarray(vertex_index)
    row_of = np.full(n_total, -1, dtype=np.int64)
    row_of[vertex_index] = np.arange(len(vertex_index))
    e = row_of[np.asarray(edges, dtype=np.int64)]
    e = e[(e >= 0).all(1)]
    e = np.concatenate([e, e[:, ::-1]])
    e = np.unique(e, axis=0)
    n = len(vertex_index)
    degree = np.bincount(e[:, 0], minlength=n)
    width = int(degree.max()) if len(e) else 1
    table = np.full((n, width), -1, dtype=np.int64)
    order = np.argsort(e[:, 0], kind="stable")
    e = e[order]
    starts = np.concatenate([[0], np.cumsum(degree)[:-1]])
    slot = np.arange(len(e)) - starts[e[:, 0]]
    table[e[:, 0], slot] = e[:, 1]
    return torch.as_tensor(table)


BETA_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0)
"""Candidate Potts strengths of :func:`choose_beta` (per edge; fsaverage vertices have 5-6 neighbours)."""
MEAN_FIELD_SWEEPS = 8
"""Damped synchronous mean-field sweeps of :func:`mean_field` (changes are below 1e-3 by then)."""


def neighbour_sum(q: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Sum of the neighbours' label probabilities.

    Parameters
    ----------
    q : Tensor of shape (B, N, K)
    neighbours : LongTensor of shape (N, M)
        Padded with -1 (:func:`neighbour_table`).

    Returns
    -------
    Tensor of shape (B, N, K)
    """
    out = torch.zeros_like(q)
    for column in neighbours.T:  # one neighbour slot at a time: (B, N, K) temporaries, not (B, N, M, K)
        gathered = q.index_select(1, column.clamp_min(0))
        out.add_(gathered.mul_((column >= 0).to(q.dtype)[None, :, None]))
    return out


def mean_field(unary: torch.Tensor, neighbours: torch.Tensor, beta: float, n_sweeps: int = MEAN_FIELD_SWEEPS,
               start: torch.Tensor | None = None) -> torch.Tensor:
    """Label probabilities under a Potts prior: the mean-field fixed point of ``softmax(u + beta * sum_m q_m)``.

    Parameters
    ----------
    unary : Tensor of shape (B, N, K)
        Per-vertex log posteriors without the Potts term (any per-vertex constant is irrelevant).
    neighbours : LongTensor of shape (N, M)
    beta : float
        Potts strength per edge; 0 returns ``softmax(unary)``.
    n_sweeps : int
        Synchronous updates, damped by half (undamped synchronous mean field can oscillate
        between two checkerboard states).
    start : Tensor of shape (B, N, K), optional
        Starting probabilities (a previous fixed point at a nearby beta); ``softmax(unary)`` by default.

    Returns
    -------
    Tensor of shape (B, N, K)
    """
    q = torch.softmax(unary, -1) if start is None else start
    if beta <= 0:
        return torch.softmax(unary, -1)
    for _ in range(n_sweeps):
        q = 0.5 * q + 0.5 * torch.softmax(unary + beta * neighbour_sum(q, neighbours), -1)
    return q


def choose_beta(unary: torch.Tensor, heldout: torch.Tensor, valid: torch.Tensor, neighbours: torch.Tensor,
                grid: tuple[float, ...] = BETA_GRID) -> tuple[float, dict[float, float]]:
    """The Potts strength whose smoothed single-session maps best predict another session.

    Parameters
    ----------
    unary : Tensor of shape (P, N, K)
        Calibrated log posteriors of one session of a subject (one row per ordered session pair).
    heldout : Tensor of shape (P, N, K)
        Calibrated log likelihood of the *other* session's fingerprint under each network.
    valid : Tensor of bool, shape (P, N)
        Vertices where both sessions have data.
    neighbours : LongTensor of shape (N, M)
    grid : tuple of float
        Candidate betas, ascending (each warm-starts from the previous fixed point).

    Returns
    -------
    beta : float
    scores : dict
        Mean held-out log predictive gain over a flat map, per candidate beta (nats per vertex).
    """
    flat = torch.logsumexp(heldout, -1) - math.log(heldout.shape[-1])
    scores: dict[float, float] = {}
    q = None
    for beta in grid:
        q = mean_field(unary, neighbours, beta, start=q)
        gain = torch.logsumexp(torch.log(q.clamp_min(1e-12)) + heldout, -1) - flat
        scores[float(beta)] = float(gain[valid].mean(dtype=torch.float64)) if bool(valid.any()) else 0.0
    best = max(scores, key=lambda b: (scores[b], -b))
    return best, scores


def consistency_gap(log_q1: torch.Tensor, log_q2: torch.Tensor, log_q12: torch.Tensor, gamma: float) -> float:
    """Posterior-consistency gap of maps tempered by ``gamma``: ``mean(p12(y1) - p1(y1)) + mean(p12(y2) - p2(y2))``.

    For calibrated maps the map of both sessions, averaged over what the second session could
    show, equals the map of the first session alone at the label the first prefers (the
    martingale property used by :func:`pavi_parcel.model.labels.consistency_temperature`); an
    overconfident map makes the gap negative.

    Parameters
    ----------
    log_q1, log_q2, log_q12 : Tensor of shape (..., K)
        Log maps of session 1, session 2 and both, at the same vertices.
    gamma : float
        Temperature on the log maps.
    """
    p1, p2, p12 = (torch.softmax(gamma * q, -1) for q in (log_q1, log_q2, log_q12))
    y1, y2 = p1.argmax(-1, keepdim=True), p2.argmax(-1, keepdim=True)
    return float((p12.gather(-1, y1) - p1.gather(-1, y1)).mean(dtype=torch.float64)
                 + (p12.gather(-1, y2) - p2.gather(-1, y2)).mean(dtype=torch.float64))


def smoothed_temperature(log_q1: torch.Tensor, log_q2: torch.Tensor, log_q12: torch.Tensor,
                         lo: float = 0.2, hi: float = 2.0, n_iter: int = 20) -> float:
    """Temperature restoring posterior consistency of Potts-smoothed maps (:func:`consistency_gap` = 0).

    Mean-field smoothing counts a vertex's evidence again through its neighbours, which makes
    the smoothed maps more confident than they should be; this temperature, found by bisection
    on ``log gamma`` from maps smoothed once, undoes it without ground truth.

    Returns
    -------
    float
        ``gamma`` in [lo, hi] (1 = the smoothed maps are consistent as they are).
    """
    a, b = math.log(lo), math.log(hi)
    if consistency_gap(log_q1, log_q2, log_q12, hi) >= 0:
        return hi
    if consistency_gap(log_q1, log_q2, log_q12, lo) <= 0:
        return lo
    for _ in range(n_iter):
        mid = 0.5 * (a + b)
        if consistency_gap(log_q1, log_q2, log_q12, math.exp(mid)) > 0:
            a = mid
        else:
            b = mid
    return float(math.exp(0.5 * (a + b)))


def smooth_maps(unary: torch.Tensor, neighbours: torch.Tensor, beta: float, gamma: float = 1.0,
                keep_confidence: bool = False) -> torch.Tensor:
    """The reported maps: the Potts mean-field fixed point of ``unary``, tempered by ``gamma``.

    Parameters
    ----------
    unary : Tensor of shape (B, N, K)
        Calibrated per-vertex log posteriors.
    neighbours : LongTensor of shape (N, M)
    beta, gamma : float
        Potts strength; temperature of :func:`smoothed_temperature`.
    keep_confidence : bool
        Instead of ``gamma``, temper each map back to the mean top-label probability of
        ``softmax(unary)``: for maps with no per-session form to calibrate the temperature on
        (mean-field SVI), smoothing then moves labels and leaves the confidence as it was.

    Returns
    -------
    Tensor of shape (B, N, K)
        Probabilities summing to one over K.
    """
    if beta <= 0:
        return torch.softmax(unary, -1)
    q = mean_field(unary, neighbours, beta)
    if gamma == 1.0 and not keep_confidence:
        return q
    log_q = torch.log(q.clamp_min(1e-30))
    if keep_confidence:
        return _tempered_to(log_q, torch.softmax(unary, -1).amax(-1).mean(-1))
    return torch.softmax(gamma * log_q, -1)


def _tempered_to(log_q: torch.Tensor, confidence: torch.Tensor, lo: float = 0.05, hi: float = 20.0,
                 n_iter: int = 30) -> torch.Tensor:
    """``softmax(gamma_b log_q_b)`` with, per map b, the gamma giving mean top-label probability ``confidence_b``."""
    a = torch.full(confidence.shape, math.log(lo), dtype=log_q.dtype, device=log_q.device)
    b = torch.full_like(a, math.log(hi))
    for _ in range(n_iter):  # the mean top-label probability rises with gamma
        mid = 0.5 * (a + b)
        low = torch.softmax(mid.exp()[:, None, None] * log_q, -1).amax(-1).mean(-1) < confidence
        a, b = torch.where(low, mid, a), torch.where(low, b, mid)
    return torch.softmax((0.5 * (a + b)).exp()[:, None, None] * log_q, -1)


__all__ = ["BETA_GRID", "MEAN_FIELD_SWEEPS", "choose_beta", "consistency_gap", "mean_field", "neighbour_sum",
           "neighbour_table", "smooth_maps", "smoothed_temperature"]
