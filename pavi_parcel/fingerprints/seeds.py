"""Fingerprint seeds: nested fsaverage3 vertices on surfaces, a regular grid in volumes."""

from __future__ import annotations

import numpy as np

from pavi_parcel.spaces.base import SpaceInfo

FSAVERAGE5_HEMI = 10242


FSAVERAGE3_HEMI = 642


def default_surface_seeds(valid_full_mask: np.ndarray) -> np.ndarray:
    """fsaverage3 vertices of both hemispheres that are valid in every run.

    Parameters
    ----------
    valid_full_mask : ndarray of bool, shape (20484,)

    Returns
    -------
    ndarray of int64, shape (n_seeds,)
        Seed indices in the full fsaverage5 space (left then right hemisphere).
    """
    nested = np.concatenate([np.arange(FSAVERAGE3_HEMI),
                             FSAVERAGE5_HEMI + np.arange(FSAVERAGE3_HEMI)])
    return nested[valid_full_mask[nested]].astype(np.int64)


def volume_grid_seeds(vertex_index: np.ndarray, space: SpaceInfo, spacing_mm: float) -> np.ndarray:
    """One seed per cube of side ``spacing_mm`` tiling the mask in world coordinates.

    Parameters
    ----------
    vertex_index : ndarray of shape (n_voxels,)
        Flat C-order indices of the in-mask voxels.
    space : SpaceInfo
        Grid shape and affine.
    spacing_mm : float

    Returns
    -------
    ndarray of int64, shape (n_seeds,)
        Flat indices of the seed voxels, sorted.
    """
    ijk = np.stack(np.unravel_index(vertex_index, space.grid_shape), axis=1).astype(np.float64)
    xyz = ijk @ space.affine[:3, :3].T + space.affine[:3, 3]
    cube = np.floor(xyz / spacing_mm).astype(np.int64)
    voxel_volume = abs(np.linalg.det(space.affine[:3, :3]))
    min_voxels = 0.5 * spacing_mm**3 / voxel_volume
    _, cube_id, counts = np.unique(cube, axis=0, return_inverse=True, return_counts=True)
    cube_id = cube_id.ravel()
    centre_dist = np.linalg.norm(xyz - (cube + 0.5) * spacing_mm, axis=1)
    order = np.lexsort((vertex_index, centre_dist, cube_id))     # nearest first within each cube
    first = order[np.r_[True, np.diff(cube_id[order]) != 0]]
    keep = first[counts[cube_id[first]] >= min_voxels]
    return np.sort(vertex_index[keep]).astype(np.int64)

