"""Icosahedral spheres and the midpoint subdivision of triangle meshes.

``icosphere(3)`` has the 642 vertices of fsaverage3 (10 * 4**3 + 2), spread evenly on the unit
sphere: the default fingerprint seeds of meshes that are not nested icosahedra (fsLR) are the
mesh vertices nearest its vertices. :func:`subdivide` splits every triangle into four at its edge
midpoints, keeping the old vertices first, as FreeSurfer's fsaverage meshes nest; :func:`face_edges`
lists a triangle mesh's edges.
"""

from __future__ import annotations

import numpy as np


def face_edges(faces: np.ndarray, offset: int = 0) -> np.ndarray:
    """The three edges of every triangle, ``offset`` added: int64 of shape (3 F, 2).

    An edge shared by two triangles appears once from each (in opposite directions on an
    oriented mesh): the Potts neighbour table and the simulator's smoother count it both ways.
    """
    faces = np.asarray(faces, dtype=np.int64)
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]) + offset


def subdivide(coords: np.ndarray, faces: np.ndarray,
              sphere: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split every triangle into four; new vertices (edge midpoints) come after the old ones.

    Parameters
    ----------
    coords : ndarray of shape (V, 3)
    faces : ndarray of int, shape (F, 3)
    sphere : bool
        Project the midpoints onto the sphere of the first vertex's radius.

    Returns
    -------
    coords : ndarray of shape (V + E, 3)
        E = the number of edges; new vertex ``V + e`` is the midpoint of edge ``e`` in the
        order of ``np.unique`` over the sorted edge pairs.
    faces : ndarray of int64, shape (4 F, 3)
    edges : ndarray of int64, shape (E, 2)
        The old edges, sorted pairs: new vertex ``V + e`` is the midpoint of ``edges[e]``.
    """
    coords = np.asarray(coords, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    pairs = np.sort(face_edges(faces), axis=1)
    edges, inverse = np.unique(pairs, axis=0, return_inverse=True)
    mid = coords[edges].mean(axis=1)
    if sphere:
        mid *= np.linalg.norm(coords[0]) / np.linalg.norm(mid, axis=1, keepdims=True)
    n_faces = faces.shape[0]
    m01, m12, m20 = (coords.shape[0] + inverse.ravel()[i * n_faces:(i + 1) * n_faces] for i in range(3))
    a, b, c = faces.T
    new_faces = np.concatenate([np.stack(t, axis=1) for t in
                                ((a, m01, m20), (b, m12, m01), (c, m20, m12), (m01, m12, m20))])
    return np.concatenate([coords, mid]), new_faces, edges


def icosphere(order: int) -> np.ndarray:
    """Vertices of the icosahedron subdivided ``order`` times, on the unit sphere: (10 * 4**order + 2, 3)."""
    t = (1 + 5 ** 0.5) / 2
    coords = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                       [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], dtype=np.float64)
    coords /= np.linalg.norm(coords, axis=1, keepdims=True)
    faces = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                      [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                      [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]])
    for _ in range(order):
        coords, faces, _ = subdivide(coords, faces, sphere=True)
    return coords


__all__ = ["face_edges", "icosphere", "subdivide"]
