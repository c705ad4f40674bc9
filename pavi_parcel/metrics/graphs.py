"""Scores of network graphs: partial correlations from precisions, edge recovery against a planted graph."""

from __future__ import annotations

import numpy as np


def partial_from_precision(precision: np.ndarray) -> np.ndarray:
    """Partial correlations ``-P_ij / sqrt(P_ii P_jj)`` of precision matrices (..., K, K), 1 on the diagonal."""
    precision = np.asarray(precision, dtype=np.float64)
    d = np.sqrt(np.einsum("...ii->...i", precision))
    out = -precision / (d[..., :, None] * d[..., None, :])
    k = precision.shape[-1]
    out[..., np.arange(k), np.arange(k)] = 1.0
    return out


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """The entries above the diagonal of a (K, K) matrix, shape (K (K - 1) / 2,)."""
    matrix = np.asarray(matrix)
    return matrix[np.triu_indices(matrix.shape[0], 1)]


def edge_f1(estimated: np.ndarray, planted: np.ndarray) -> float:
    """F1 score of the estimated edges (non-zero off-diagonal entries) against the planted ones.

    Parameters
    ----------
    estimated, planted : ndarray of shape (K, K)
        Partial correlations, precisions or boolean adjacency matrices; an entry is an edge when
        it is not zero.

    Returns
    -------
    float
        ``2 TP / (2 TP + FP + FN)`` over the pairs i < j; 1.0 when both graphs are empty.
    """
    est, true = upper_triangle(estimated) != 0, upper_triangle(planted) != 0
    tp = int(np.sum(est & true))
    wrong = int(np.sum(est != true))
    return 1.0 if tp + wrong == 0 else 2.0 * tp / (2.0 * tp + wrong)


def edge_auc(estimated: np.ndarray, planted: np.ndarray) -> float:
    """How well ``|estimated|`` ranks the planted edges above the other pairs: the ROC area, threshold-free.

    Parameters
    ----------
    estimated : ndarray of shape (K, K)
        Partial correlations (or any edge weights).
    planted : ndarray of shape (K, K)
        Non-zero where the planted graph has an edge.

    Returns
    -------
    float
        The probability that a planted edge has a larger ``|estimated|`` than a planted non-edge
        (ties count half); NaN when either class is empty.
    """
    score, true = np.abs(upper_triangle(estimated)), upper_triangle(planted) != 0
    pos, neg = score[true], score[~true]
    if not pos.size or not neg.size:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def edge_correlation(estimated: np.ndarray, planted: np.ndarray) -> float:
    """Pearson correlation of two matrices' off-diagonal entries (NaN when one is constant)."""
    a, b = upper_triangle(estimated).astype(np.float64), upper_triangle(planted).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


__all__ = ["edge_auc", "edge_correlation", "edge_f1", "partial_from_precision", "upper_triangle"]
