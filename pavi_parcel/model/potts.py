"""Neighbour tables for the Potts label prior: fsaverage5 mesh edges or grid adjacency.

The Potts term ``beta * sum_{(n, m) edges} [y_n = y_m]`` enters the ELBO in mean-field form,
``beta * sum_edges lambda_n . lambda_m``; the label encoder receives the sum of the neighbours'
current label probabilities. Neighbours are given as a padded table of store rows.
"""

from __future__ import annotations

import numpy as np
import torch

from pavi_parcel.spaces.base import SpaceInfo

FSAVERAGE5_HEMI = 10242


def _edges_to_table(edges: np.ndarray, vertex_index: np.ndarray, n_total: int) -> torch.Tensor:
    """Full-space edges (E, 2) -> padded (N, M) table of store rows (-1 = none)."""
    row_of = np.full(n_total, -1, dtype=np.int64)
    row_of[vertex_index] = np.arange(len(vertex_index))
    e = row_of[edges]
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


def grid_edges(grid_shape: tuple[int, ...]) -> np.ndarray:
    """Face-adjacent pairs of a C-ordered grid, full-space flat indices, shape (E, 2)."""
    idx = np.arange(int(np.prod(grid_shape))).reshape(grid_shape)
    pairs = []
    for axis in range(len(grid_shape)):
        if grid_shape[axis] < 2:
            continue
        a = np.take(idx, np.arange(grid_shape[axis] - 1), axis=axis).ravel()
        b = np.take(idx, np.arange(1, grid_shape[axis]), axis=axis).ravel()
        pairs.append(np.stack([a, b], 1))
    return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)


def fsaverage5_edges() -> np.ndarray:
    """Mesh edges of both fsaverage5 hemispheres (left 0..10241, right 10242..20483), shape (E, 2)."""
    from nilearn.datasets import load_fsaverage

    mesh = load_fsaverage("fsaverage5")["pial"]
    out = []
    for offset, part in ((0, mesh.parts["left"]), (FSAVERAGE5_HEMI, mesh.parts["right"])):
        f = np.asarray(part.faces, dtype=np.int64)
        out.append(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]) + offset)
    return np.concatenate(out)


def neighbour_table(space: SpaceInfo, vertex_index: np.ndarray) -> torch.Tensor:
    """Neighbours of every modelled vertex as store rows.

    Parameters
    ----------
    space : SpaceInfo
        fsaverage5 (mesh edges) or a volume / grid (face adjacency on ``grid_shape``).
    vertex_index : ndarray of shape (N,)
        Full-space index of each store row.

    Returns
    -------
    LongTensor of shape (N, M)
        Row indices of each vertex's neighbours, padded with -1.
    """
    if space.grid_shape is not None:
        edges = grid_edges(tuple(int(v) for v in space.grid_shape))
    elif space.space == "fsaverage5":
        edges = fsaverage5_edges()
    else:
        raise ValueError(f"No neighbour definition for space {space.space!r}")
    return _edges_to_table(edges, np.asarray(vertex_index), int(space.n_total))
