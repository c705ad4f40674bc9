"""One matching of fitted networks to planted ones for a whole cohort (Hungarian, on the most probable labels)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pavi_parcel.metrics.scores import hungarian_match
from pavi_parcel.stores.posterior import Posterior


def truth_mapping(posterior: Posterior, truth: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The planted networks the fitted ones match: one Hungarian matching for the whole cohort.

    Returns
    -------
    truth_rows : ndarray of int, shape (n_subjects, n_vertices)
        Planted labels 0..K-1 of every subject at the fitted vertices (-1 off the model).
    pred_rows : ndarray of int, shape (n_subjects, n_vertices)
        Most probable fitted network.
    mapping : ndarray of int, shape (max(K, K_truth),)
        ``mapping[l]`` is the planted network matched to fitted network ``l``.
    """
    truth_rows = np.stack([truth.subject_labels[s][posterior.vertex_index] for s in posterior.subjects]) - 1
    pred_rows = posterior.subject_probs.argmax(axis=2)
    on_cortex = truth_rows >= 0
    # networks keep one identity across subjects
    n_labels = max(posterior.n_networks, int(truth_rows.max()) + 1)
    return truth_rows, pred_rows, hungarian_match(pred_rows[on_cortex], truth_rows[on_cortex], n_labels)


__all__ = ["truth_mapping"]
