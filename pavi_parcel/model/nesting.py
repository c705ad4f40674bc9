"""Nested scales: every fine network gets one coarse parent, and coarse probabilities are sums of their children's.

The parents come from the fitted group profiles (mu, unit vectors of the fingerprint space) of
two independent fits of the same cohort, a coarse one (K_c networks) and a fine one (K_f > K_c):
first every coarse network takes the fine network most similar to it, one each (a Hungarian
matching on the cosine similarity, so no coarse network is left without a child), then every
other fine network joins the coarse network whose profile is nearest to its own. Then

    P(coarse c) = sum over the fine networks f with parent(f) = c of P(fine f)

holds for every vertex of every map, to float precision, by construction.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def choose_parents(fine_profiles: np.ndarray, coarse_profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The coarse parent of every fine network, from the group profiles.

    Parameters
    ----------
    fine_profiles : ndarray of shape (K_f, D)
    coarse_profiles : ndarray of shape (K_c, D)
        ``K_c <= K_f``; rows need not be normalised.

    Returns
    -------
    parents : ndarray of int64, shape (K_f,)
        ``parents[f]`` is the coarse network (0-based) of fine network ``f``; every coarse
        network has at least one child.
    similarity : ndarray of float64, shape (K_f,)
        Cosine similarity of each fine profile with its parent's.

    Raises
    ------
    ValueError
        More coarse than fine networks, or profiles of other dimensions.
    """
    fine = np.asarray(fine_profiles, dtype=np.float64)
    coarse = np.asarray(coarse_profiles, dtype=np.float64)
    if fine.shape[1] != coarse.shape[1] or coarse.shape[0] > fine.shape[0]:
        raise ValueError(f"cannot nest {coarse.shape} profiles under {fine.shape}: need K_c <= K_f, same D")
    fine /= np.maximum(np.linalg.norm(fine, axis=1, keepdims=True), 1e-12)
    coarse /= np.maximum(np.linalg.norm(coarse, axis=1, keepdims=True), 1e-12)
    cosine = fine @ coarse.T                                           # (K_f, K_c)
    parents = cosine.argmax(axis=1)
    rows, cols = linear_sum_assignment(-cosine)                        # one child for every coarse network
    parents[rows] = cols
    return parents.astype(np.int64), cosine[np.arange(fine.shape[0]), parents]


def nest_probabilities(probs: np.ndarray, parents: np.ndarray, n_coarse: int) -> np.ndarray:
    """Coarse probabilities as sums of the fine ones.

    Parameters
    ----------
    probs : ndarray of shape (..., K_f)
    parents : ndarray of int, shape (K_f,)
    n_coarse : int

    Returns
    -------
    ndarray of shape (..., n_coarse), same dtype as ``probs``
    """
    probs = np.asarray(probs)
    membership = np.zeros((probs.shape[-1], int(n_coarse)), dtype=probs.dtype)
    membership[np.arange(probs.shape[-1]), np.asarray(parents)] = 1
    return probs @ membership


__all__ = ["choose_parents", "nest_probabilities"]
