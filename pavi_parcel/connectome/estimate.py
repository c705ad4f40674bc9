"""Connectomes between the networks: correlations, and sparse partial correlations with a population prior.

The population prior is nilearn's group-sparse covariance (Varoquaux et al., NIPS 2010):
every subject has its own precision matrix, but a group-lasso penalty makes them share one
sparsity pattern, the edges of the population's graph; the penalty's strength is chosen by
cross-validation (:class:`nilearn.connectome.GroupSparseCovarianceCV`). The comparator without
a population prior is a graphical lasso per subject (:class:`sklearn.covariance.GraphicalLassoCV`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.metrics.graphs import partial_from_precision

from .timeseries import standardised

log = logging.getLogger(__name__)


@dataclass
class CohortConnectomes:
    """Network connectomes of every subject of a cohort.

    Attributes
    ----------
    correlation : ndarray of shape (n_subjects, K, K)
        Pearson correlation over all of the subject's frames (runs standardised, then pooled).
    partial : ndarray of shape (n_subjects, K, K)
        Partial correlation from the subject's group-sparse precision; 1 on the diagonal.
    precision : ndarray of shape (n_subjects, K, K)
    alpha : float
        The penalty chosen by cross-validation.
    n_frames : ndarray of int, shape (n_subjects,)
    """

    correlation: np.ndarray
    partial: np.ndarray
    precision: np.ndarray
    alpha: float
    n_frames: np.ndarray

    @property
    def edges(self) -> np.ndarray:
        """Edges of the population graph, bool (K, K): non-zero in the (shared) precision support."""
        support = np.any(np.abs(self.precision) > 0, axis=0)
        np.fill_diagonal(support, False)
        return support


def pooled(runs: Sequence[np.ndarray]) -> np.ndarray:
    """A subject's frames: each run (n_frames, K) standardised, then stacked, shape (sum of frames, K)."""
    return np.concatenate([standardised(r) for r in runs], axis=0)


def correlation_matrix(series: np.ndarray) -> np.ndarray:
    """Pearson correlation (K, K) of the columns of ``series`` (n_frames, K); 0 for a constant column."""
    z = standardised(series)
    corr = z.T @ z / max(z.shape[0], 1)
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def group_sparse_connectomes(subjects: Sequence[np.ndarray], alphas: int = 4, n_refinements: int = 4,
                             max_iter: int = 100, tol: float = 1e-3) -> CohortConnectomes:
    """Correlations and group-sparse partial correlations of a cohort.

    Parameters
    ----------
    subjects : sequence of ndarray, each of shape (n_frames_s, K)
        Every subject's pooled network time series (:func:`pooled`).
    alphas, n_refinements : int
        The penalty grid of the cross-validation (nilearn's parameters of the same names).
    max_iter : int
        Iterations of the final fit.
    tol : float

    Returns
    -------
    CohortConnectomes

    Raises
    ------
    BadInputError
        Fewer than two subjects, or subjects with too few frames for the cross-validation.
    """
    from nilearn.connectome import GroupSparseCovarianceCV

    if len(subjects) < 2:
        raise BadInputError("Too few subjects for a population prior on the connectomes", "at least 2 subjects",
                            f"{len(subjects)}", "fit more subjects, or set connectome.enabled=false")
    frames = np.array([s.shape[0] for s in subjects])
    k = subjects[0].shape[1]
    if frames.min() < 5 * 2:  # 5 folds of at least 2 frames each
        raise BadInputError("Too few frames for the connectome cross-validation", "at least 10 frames per subject",
                            f"{frames.min()} frames", "add runs, or set connectome.enabled=false")
    data = [standardised(s) for s in subjects]
    estimator = GroupSparseCovarianceCV(alphas=alphas, n_refinements=n_refinements, max_iter=max_iter, tol=tol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # early-stopping notes on the CV path
        estimator.fit(data)
    precision = np.moveaxis(np.asarray(estimator.precisions_, dtype=np.float64), -1, 0)  # (S, K, K)
    correlation = np.stack([correlation_matrix(s) for s in data])
    log.info("Group-sparse connectomes of %d subjects x %d networks: alpha %.3g chosen by cross-validation",
             len(data), k, float(estimator.alpha_))
    return CohortConnectomes(correlation, partial_from_precision(precision), precision, float(estimator.alpha_),
                             frames)


def individual_sparse_partial(series: np.ndarray, alphas: int = 4, n_refinements: int = 4) -> np.ndarray:
    """Partial correlations (K, K) of one subject by a graphical lasso alone (no population prior)."""
    from sklearn.covariance import GraphicalLassoCV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GraphicalLassoCV(alphas=alphas, n_refinements=n_refinements).fit(standardised(series))
    return partial_from_precision(model.precision_)


__all__ = ["CohortConnectomes", "correlation_matrix", "group_sparse_connectomes", "individual_sparse_partial",
           "pooled"]
