"""Per-vertex arrays for the maps: scattering into the full space, hard labels, normalised entropy.

Conventions
-----------
- Vertices or voxels outside the model (medial wall, outside the brain mask) hold 0
  probability in every network, label 0, and uncertainty 0.
- How the full-space arrays become files (GIFTI per hemisphere, NIfTI volumes) is the space's
  business (:meth:`pavi_parcel.spaces.Space.write_map`).
"""

from __future__ import annotations

import numpy as np

from pavi_parcel.metrics.scores import entropy_map


def to_full_space(values: np.ndarray, vertex_index: np.ndarray, n_total: int, fill: float = 0) -> np.ndarray:
    """Scatter per-vertex values into the full space.

    Parameters
    ----------
    values : ndarray of shape (n_vertices,) or (n_vertices, K)
    vertex_index : ndarray of int, shape (n_vertices,)
    n_total : int
    fill : scalar
        Value of the full-space entries without data.

    Returns
    -------
    ndarray of shape (n_total,) or (n_total, K), dtype of ``values``
    """
    values = np.asarray(values)
    out = np.full((n_total,) + values.shape[1:], fill, dtype=values.dtype)
    out[np.asarray(vertex_index)] = values
    return out


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Posterior entropy divided by log K, in [0, 1].

    Parameters
    ----------
    probs : ndarray of shape (n_vertices, K)
        Rows sum to 1.

    Returns
    -------
    ndarray of float32, shape (n_vertices,)
        0 = all mass on one network, 1 = uniform over the K networks.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[-1] < 2:
        return np.zeros(probs.shape[:-1], dtype=np.float32)
    return np.clip(entropy_map(probs, normalized=True), 0.0, 1.0).astype(np.float32)


def hard_labels(probs: np.ndarray) -> np.ndarray:
    """Argmax labels 1..K of rows of ``probs``: ndarray of int32, shape (n_vertices,)."""
    return (np.argmax(probs, axis=-1) + 1).astype(np.int32)


__all__ = ["hard_labels", "normalized_entropy", "to_full_space"]
