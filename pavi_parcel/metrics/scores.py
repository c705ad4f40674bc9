"""Parcellation metrics: agreement (ARI, Dice), calibration, homogeneity, uncertainty.

All functions are vectorised numpy. Labels are integers ``0 .. K-1``; negative labels mark
vertices to ignore (medial wall, no data) wherever a function says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment


def _contingency(a: np.ndarray, b: np.ndarray, n_a: int | None = None, n_b: int | None = None) -> np.ndarray:
    """Counts table of two label vectors, shape (n_a, n_b), int64."""
    a = np.asarray(a, dtype=np.int64).ravel()
    b = np.asarray(b, dtype=np.int64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"label vectors differ in length: {a.size} and {b.size}")
    n_a = int(a.max(initial=-1)) + 1 if n_a is None else n_a
    n_b = int(b.max(initial=-1)) + 1 if n_b is None else n_b
    if a.size and (a.max() >= n_a or b.max() >= n_b):
        raise ValueError(f"labels must lie in 0..n_networks-1; got maxima {a.max()} and {b.max()} "
                         f"for {n_a} and {n_b} networks")
    return np.bincount(a * n_b + b, minlength=n_a * n_b).reshape(n_a, n_b)


def _valid_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    keep = (a >= 0) & (b >= 0)
    return a[keep], b[keep]


def adjusted_rand_index(a: Sequence[int] | np.ndarray, b: Sequence[int] | np.ndarray) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two partitions of the same vertices.

    Parameters
    ----------
    a, b : array-like of int, shape (n_vertices,)
        Labels; vertices with a negative label in either are ignored. Label values need not match.

    Returns
    -------
    float
        1 for identical partitions (up to relabelling), about 0 for independent ones.
    """
    a, b = _valid_pairs(a, b)
    n = a.size
    if n < 2:
        return 1.0
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    table = _contingency(a, b).astype(np.float64)
    pairs = lambda c: (c * (c - 1) / 2.0).sum()  # noqa: E731
    index = pairs(table)
    rows, cols = pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2.0)
    maximum = (rows + cols) / 2.0
    if maximum == expected:  # both partitions trivial (one cluster each, or all singletons)
        return 1.0
    return float((index - expected) / (maximum - expected))


def hungarian_match(labels_pred: np.ndarray, labels_ref: np.ndarray, n_networks: int) -> np.ndarray:
    """One-to-one relabelling of predicted networks that maximises overlap with a reference.

    Parameters
    ----------
    labels_pred, labels_ref : ndarray of int, shape (n_vertices,) or (n_subjects, n_vertices)
        Labels in ``0 .. n_networks-1``; negative labels are ignored. With 2-D inputs the
        overlap is pooled over rows (one mapping for all subjects).
    n_networks : int

    Returns
    -------
    ndarray of int, shape (n_networks,)
        ``mapping[l]`` is the reference label given to predicted network ``l``; apply it
        with ``mapping[labels_pred]``.
    """
    a, b = _valid_pairs(labels_pred, labels_ref)
    overlap = _contingency(a, b, n_networks, n_networks)
    rows, cols = linear_sum_assignment(-overlap)
    mapping = np.empty(n_networks, dtype=np.int64)
    mapping[rows] = cols
    return mapping


def dice_per_network(a: np.ndarray, b: np.ndarray, n_networks: int) -> np.ndarray:
    """Dice overlap ``2 |A_l & B_l| / (|A_l| + |B_l|)`` of each network (no relabelling).

    Parameters
    ----------
    a, b : ndarray of int, shape (n_vertices,)
        Labels in the same label space; negative labels are ignored.
    n_networks : int

    Returns
    -------
    ndarray of float, shape (n_networks,)
        NaN for a network absent from both.
    """
    a, b = _valid_pairs(a, b)
    table = _contingency(a, b, n_networks, n_networks)
    denom = table.sum(1) + table.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * np.diag(table) / denom, np.nan)


def mean_dice_after_matching(labels_pred: np.ndarray, labels_ref: np.ndarray, n_networks: int) -> float:
    """Mean Dice over networks after :func:`hungarian_match` (networks absent from both are skipped)."""
    mapping = hungarian_match(labels_pred, labels_ref, n_networks)
    pred = np.asarray(labels_pred)
    relabelled = np.where(pred >= 0, mapping[np.clip(pred, 0, None)], -1)
    return float(np.nanmean(dice_per_network(relabelled.ravel(), np.asarray(labels_ref).ravel(), n_networks)))


def reliability_curve(probs: np.ndarray, true_labels: np.ndarray,
                      n_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-label reliability diagram.

    Vertices are binned by the probability of their most probable network (the confidence)
    into ``n_bins`` equal-width bins of [0, 1].

    Parameters
    ----------
    probs : ndarray of shape (n_vertices, n_networks)
        Predicted probabilities (rows sum to 1).
    true_labels : ndarray of int, shape (n_vertices,)
        Reference labels in the same label space; negative labels are ignored.
    n_bins : int, default 15

    Returns
    -------
    confidence : ndarray of shape (n_bins,)
        Mean confidence in each bin (NaN for an empty bin).
    accuracy : ndarray of shape (n_bins,)
        Fraction of vertices whose most probable network is the true one (NaN if empty).
    counts : ndarray of int, shape (n_bins,)
    """
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, np.shape(probs)[-1])
    labels = np.asarray(true_labels).ravel()
    keep = labels >= 0
    probs, labels = probs[keep], labels[keep]
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    bins = np.clip((conf * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, conf, n_bins) / counts
        accuracy = np.bincount(bins, correct, n_bins) / counts
    return mean_conf, accuracy, counts


def expected_calibration_error(probs: np.ndarray, true_labels: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al. 2017).

    ``ECE = sum_b (n_b / n) |accuracy_b - confidence_b|`` over the bins of
    :func:`reliability_curve`: 0 for a perfectly calibrated predictor, up to 1.

    Parameters
    ----------
    probs : ndarray of shape (n_vertices, n_networks)
    true_labels : ndarray of int, shape (n_vertices,)
        Negative labels are ignored.
    n_bins : int, default 15

    Returns
    -------
    float
    """
    conf, acc, counts = reliability_curve(probs, true_labels, n_bins)
    total = counts.sum()
    if total == 0:
        return float("nan")
    nonempty = counts > 0
    return float((counts[nonempty] * np.abs(acc[nonempty] - conf[nonempty])).sum() / total)


def homogeneity(labels: np.ndarray, timeseries: np.ndarray) -> float:
    """Resting-state homogeneity of a parcellation (Schaefer et al. 2018; Kong et al. 2019).

    The average Pearson correlation between the time series of all pairs of vertices within
    a parcel, averaged over parcels weighted by parcel size. For z-scored series scaled to
    unit norm, the sum over pairs of a parcel of ``n`` vertices is ``(||sum||^2 - n) / 2``,
    so the mean pairwise correlation is ``(||sum||^2 - n) / (n (n - 1))``: no ``n x n`` matrix.

    Parameters
    ----------
    labels : ndarray of int, shape (n_vertices,)
        Parcel of every vertex; negative labels (and constant time series) are ignored.
    timeseries : ndarray of shape (n_frames, n_vertices)

    Returns
    -------
    float
        Size-weighted mean within-parcel correlation over parcels with at least 2 vertices.
    """
    labels = np.asarray(labels).ravel()
    data = np.asarray(timeseries, dtype=np.float64)
    data = data - data.mean(0, keepdims=True)
    norm = np.linalg.norm(data, axis=0)
    keep = (labels >= 0) & (norm > 0)
    unit = data[:, keep] / norm[keep]
    _, lab = np.unique(labels[keep], return_inverse=True)
    n_parcels = int(lab.max()) + 1 if lab.size else 0
    sizes = np.bincount(lab, minlength=n_parcels).astype(np.float64)
    onehot = sparse.csr_matrix((np.ones(lab.size), (lab, np.arange(lab.size))), shape=(n_parcels, lab.size))
    sums = np.asarray(onehot @ unit.T)  # (n_parcels, n_frames)
    sq = (sums ** 2).sum(1)
    big = sizes >= 2
    if not big.any():
        return float("nan")
    mean_corr = (sq[big] - sizes[big]) / (sizes[big] * (sizes[big] - 1))
    return float((mean_corr * sizes[big]).sum() / sizes[big].sum())


def entropy_map(probs: np.ndarray, normalized: bool = False) -> np.ndarray:
    """Shannon entropy (nats) of label probabilities along the last axis.

    Parameters
    ----------
    probs : ndarray of shape (..., n_networks)
    normalized : bool, default False
        Divide by ``log(n_networks)`` so values lie in [0, 1].

    Returns
    -------
    ndarray of shape probs.shape[:-1]
    """
    p = np.asarray(probs, dtype=np.float64)
    ent = -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)
    return ent / np.log(p.shape[-1]) if normalized else ent


def mean_dice_to_many(labels: np.ndarray, others: np.ndarray, n_networks: int) -> np.ndarray:
    """Mean Dice (over networks, no relabelling) of one hard map with each of several others.

    Parameters
    ----------
    labels : ndarray of int, shape (n_vertices,)
        Labels in ``0 .. n_networks-1`` (all vertices used).
    others : ndarray of int, shape (n_maps, n_vertices)
        Maps in the same label space (same network order: no matching is done).
    n_networks : int

    Returns
    -------
    ndarray of float, shape (n_maps,)
        Per map, the mean of :func:`dice_per_network` over the networks present in either map
        (NaN when there is none).
    """
    a = np.asarray(labels, dtype=np.int64).ravel()
    b = np.asarray(others, dtype=np.int64).reshape(-1, a.size)
    m, k = b.shape[0], int(n_networks)
    rows = np.arange(m)[:, None] * k
    inter = np.bincount((rows + a[None, :])[b == a[None, :]], minlength=m * k).reshape(m, k)
    size_b = np.bincount((rows + b).ravel(), minlength=m * k).reshape(m, k)
    denom = np.bincount(a, minlength=k)[None, :] + size_b
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2.0 * inter / denom, np.nan)
    present = np.isfinite(dice).any(1)
    out = np.full(m, np.nan)
    out[present] = np.nanmean(dice[present], axis=1)
    return out


def within_between_dice(session_labels: Sequence[np.ndarray], n_networks: int,
                        max_between: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Reliability of individual maps (Kong et al. 2019): within- versus between-subject Dice.

    Parameters
    ----------
    session_labels : sequence of ndarray of int, each of shape (n_sessions_s, n_vertices)
        One entry per subject: a hard map per session, every map in the same network order.
    n_networks : int
    max_between : int, default 100
        At most this many other subjects per subject for the between-subject mean (evenly
        spaced over the rest of the list, deterministic), so the cost stays linear in the cohort.

    Returns
    -------
    within : ndarray of float, shape (n_subjects,)
        Mean Dice (:func:`mean_dice_to_many`) over every pair of the subject's session maps;
        NaN with fewer than two sessions.
    between : ndarray of float, shape (n_subjects,)
        Mean Dice between the subject's first session map and the first session maps of the
        other subjects; NaN for a cohort of one. Individual maps capture individual
        topography when ``within > between``.
    """
    n = len(session_labels)
    first = np.stack([np.asarray(m)[0] for m in session_labels]) if n else np.zeros((0, 0), np.int64)
    within, between = np.full(n, np.nan), np.full(n, np.nan)
    for i, maps in enumerate(session_labels):
        maps = np.asarray(maps)
        pairs = [mean_dice_to_many(maps[t], maps[t + 1:], n_networks) for t in range(len(maps) - 1)]
        if pairs:
            within[i] = float(np.nanmean(np.concatenate(pairs)))
        rest = np.delete(np.arange(n), i)
        if rest.size > max_between:
            rest = rest[np.linspace(0, rest.size - 1, max_between).round().astype(np.int64)]
        if rest.size:
            between[i] = float(np.nanmean(mean_dice_to_many(first[i], first[rest], n_networks)))
    return within, between


def heldout_log_likelihood(probs: np.ndarray, loglik: np.ndarray) -> tuple[float, float]:
    """Score a soft map by the log-likelihood of held-out data, per vertex.

    Parameters
    ----------
    probs : ndarray of shape (n_vertices, n_networks)
        q(y_n = l), rows summing to 1.
    loglik : ndarray of shape (n_vertices, n_networks)
        ``log p(x_n | y_n = l)`` of the held-out data at every vertex and network; only the
        vertices that have held-out data are passed.

    Returns
    -------
    expected : float
        ``mean_n sum_l q(y_n = l) log p(x_n | y_n = l)``: the expected log-likelihood (the data
        term of the ELBO) per vertex.
    predictive : float
        ``mean_n log sum_l q(y_n = l) p(x_n | y_n = l)``: the log predictive density per
        vertex, which also rewards calibrated uncertainty (a confident wrong label costs
        ``log q`` rather than the whole likelihood gap).
    """
    p = np.asarray(probs, dtype=np.float64)
    ll = np.asarray(loglik, dtype=np.float64)
    if p.shape[0] == 0:
        return float("nan"), float("nan")
    expected = float(np.mean((p * ll).sum(1)))
    with np.errstate(divide="ignore"):
        joint = np.log(p) + ll
    top = joint.max(1, keepdims=True)
    predictive = float(np.mean(top[:, 0] + np.log(np.exp(joint - top).sum(1))))
    return expected, predictive


__all__ = ["adjusted_rand_index", "hungarian_match", "dice_per_network", "mean_dice_after_matching",
           "reliability_curve", "expected_calibration_error", "homogeneity", "entropy_map", "mean_dice_to_many",
           "within_between_dice", "heldout_log_likelihood"]
