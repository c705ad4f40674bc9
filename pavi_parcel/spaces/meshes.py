"""fsaverage meshes from nilearn's bundled data: pial (masking), inflated and sulcal depth (figures), edges.

nilearn ships fsaverage5 (offline); other densities are fetched by nilearn on first use, which
needs the internet. Meshes are held in memory once per process.
"""

from __future__ import annotations

import functools

import numpy as np

from pavi_parcel.exceptions import BadInputError


def _nilearn_name(space: str) -> str:
    return "fsaverage" if space == "fsaverage7" else space


@functools.lru_cache(maxsize=4)
def pial_mesh(space: str):
    """The pial mesh of an fsaverage space as a nilearn ``PolyMesh`` held in memory.

    nilearn compares meshes on every masker call, so an in-memory mesh saves re-reading files.

    Raises
    ------
    BadInputError
        When nilearn cannot load the mesh (only fsaverage5 ships with nilearn).
    """
    from nilearn.datasets import load_fsaverage
    from nilearn.surface import InMemoryMesh, PolyMesh

    try:
        pial = load_fsaverage(_nilearn_name(space))["pial"]
    except Exception as exc:  # only fsaverage5 ships with nilearn; the others are downloaded
        raise BadInputError(f"Cannot load the {space} mesh", "nilearn's fsaverage meshes (fsaverage5 ships "
                            "with nilearn, the others are downloaded once)", exc.__class__.__name__,
                            "connect to the internet once, or resample the runs to fsaverage5") from exc
    return PolyMesh(**{h: InMemoryMesh(part.coordinates, part.faces) for h, part in pial.parts.items()})


@functools.lru_cache(maxsize=4)
def mesh_faces(space: str) -> dict[str, np.ndarray]:
    """Triangles of each hemisphere, ``{"left": (F, 3), "right": (F, 3)}``, vertex indices within it."""
    return {h: np.asarray(part.faces, dtype=np.int64) for h, part in pial_mesh(space).parts.items()}


def inflated_mesh_and_sulcal(space: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Inflated meshes and sulcal depth of both hemispheres (for figures), from nilearn.

    Returns
    -------
    meshes : dict
        ``{"left": mesh, "right": mesh}`` (nilearn meshes).
    sulcal : dict
        ``{"left": ndarray (n_vertices,), "right": ...}``.
    """
    from nilearn.datasets import load_fsaverage, load_fsaverage_data

    mesh = load_fsaverage(_nilearn_name(space))["inflated"]
    sulc = load_fsaverage_data(mesh=_nilearn_name(space), data_type="sulcal", mesh_type="inflated")
    return ({h: mesh.parts[h] for h in ("left", "right")},
            {h: np.asarray(sulc.data.parts[h]).ravel() for h in ("left", "right")})


def sphere_coordinates(space: str) -> dict[str, np.ndarray]:
    """Coordinates of the sphere mesh of both hemispheres, ``{"left": (V, 3), ...}`` (simulations)."""
    from nilearn.datasets import load_fsaverage

    sphere = load_fsaverage(_nilearn_name(space))["sphere"]
    return {h: np.asarray(sphere.parts[h].coordinates, dtype=np.float64) for h in ("left", "right")}


__all__ = ["inflated_mesh_and_sulcal", "mesh_faces", "pial_mesh", "sphere_coordinates"]
