"""Network time series: each run's cleaned vertex time series averaged with the subject's map as weights.

A network's time series is the weighted mean of the vertex time series, with weights from the
subject's soft map (``soft``: every vertex counts by its probability of belonging to the
network, so uncertain boundary vertices count little) or its hard map (``hard``: the plain
mean over the vertices whose most probable network it is, as a hard parcellation gives).
"""

from __future__ import annotations

import numpy as np

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.stores.timeseries import RunTimeSeries

WEIGHTINGS = ("soft", "hard")


def network_weights(probs: np.ndarray, weighting: str) -> np.ndarray:
    """Vertex weights of every network, from a subject's map.

    Parameters
    ----------
    probs : ndarray of shape (n_vertices, K)
        The subject's posterior label probabilities (label order).
    weighting : {"soft", "hard"}

    Returns
    -------
    ndarray of float32, shape (n_vertices, K)
        Non-negative; a column sums to the network's (expected) number of vertices. A network that
        is nowhere the most probable keeps its soft weights under ``hard``, so it still has a series.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if weighting == "soft":
        return probs
    if weighting == "hard":
        hard = np.zeros_like(probs)
        hard[np.arange(probs.shape[0]), np.argmax(probs, axis=1)] = 1.0
        empty = hard.sum(axis=0) == 0
        hard[:, empty] = probs[:, empty]
        return hard
    raise BadInputError(f"Unknown connectome weighting {weighting!r}", " or ".join(WEIGHTINGS), repr(weighting),
                        "set connectome.weighting=soft")


def run_network_timeseries(run: RunTimeSeries, vertex_index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The networks' time series of one run.

    Parameters
    ----------
    run : RunTimeSeries
        Cleaned, standardised vertex time series (ingest store).
    vertex_index : ndarray of int64, shape (n_vertices,)
        The fitted vertices (full-space indices), rows of ``weights``.
    weights : ndarray of shape (n_vertices, K)
        From :func:`network_weights`.

    Returns
    -------
    ndarray of float32, shape (n_frames, K)
        Weighted means over the vertices the run has data at (weights renormalised over them);
        a network with no weight there is all NaN.
    """
    columns, present = run.columns_of(vertex_index)
    w = np.asarray(weights, dtype=np.float32)[present]
    total = w.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        series = (run.data[:, columns[present]] @ w) / total  # (T, K): one matmul per run
    series[:, total <= 0] = np.nan
    return series.astype(np.float32)


def standardised(series: np.ndarray) -> np.ndarray:
    """Each column with zero mean and unit variance (constant columns become zero), float64."""
    series = np.asarray(series, dtype=np.float64)
    centred = series - series.mean(axis=0)
    sd = centred.std(axis=0)
    return centred / np.where(sd > 0, sd, 1.0)


__all__ = ["WEIGHTINGS", "network_weights", "run_network_timeseries", "standardised"]
