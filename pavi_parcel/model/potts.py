"""Neighbour tables for the Potts label prior, from the edges of a space (mesh edges, grid adjacency).

The Potts term ``beta * sum_{(n, m) edges} [y_n = y_m]`` enters the ELBO in mean-field form,
``beta * sum_edges lambda_n . lambda_m``; the label encoder receives the sum of the neighbours'
current label probabilities. Neighbours are given as a padded table of store rows; the edges
come from the space (:meth:`pavi_parcel.spaces.Space.edges`).
"""

from __future__ import annotations

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


__all__ = ["neighbour_table"]
