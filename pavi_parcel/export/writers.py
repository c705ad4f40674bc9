"""Low-level map writers: full-space arrays to GIFTI and NIfTI images, JSON and text files.

Every file goes through :func:`pavi_parcel.io.atomic.atomic_write` (temporary name next to the
target, then rename), so a reader sees the old file or the complete new one, never a
truncated one.

Conventions
-----------
- Surface maps (fsaverage5) are split into hemispheres: full-space vertices 0..10241 are the
  left hemisphere, 10242..20483 the right.
- Vertices or voxels outside the model (medial wall, outside the brain mask) hold 0
  probability in every network, label 0, and uncertainty 0.
- Volume maps are reshaped from the flat C-order index of ``SpaceInfo.grid_shape`` and
  keep the source affine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pavi_parcel.atlas.naming import LabelTable
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.spaces.base import SpaceInfo

N_HEMI = 10242
_STRUCTURE = {"L": "CortexLeft", "R": "CortexRight"}


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


def hemispheres(full: np.ndarray) -> dict[str, np.ndarray]:
    """Split a full fsaverage5 array (20,484 rows, left then right) into ``{"L": ..., "R": ...}``."""
    return {"L": full[:N_HEMI], "R": full[N_HEMI:2 * N_HEMI]}


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
    from pavi_parcel.metrics.scores import entropy_map
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[-1] < 2:
        return np.zeros(probs.shape[:-1], dtype=np.float32)
    return np.clip(entropy_map(probs, normalized=True), 0.0, 1.0).astype(np.float32)


def hard_labels(probs: np.ndarray) -> np.ndarray:
    """Argmax labels 1..K of rows of ``probs``: ndarray of int32, shape (n_vertices,)."""
    return (np.argmax(probs, axis=-1) + 1).astype(np.int32)


# --------------------------------------------------------------------------- GIFTI
def gifti_probseg(probs: np.ndarray, table: LabelTable, hemi: str):
    """One data array per network (label order), float32; ``probs`` has shape (10242, K)."""
    import nibabel as nib
    img = nib.gifti.GiftiImage(meta=_meta(hemi))
    for k, name in enumerate(table.names):
        img.add_gifti_data_array(nib.gifti.GiftiDataArray(
            np.ascontiguousarray(probs[:, k], dtype=np.float32), intent="NIFTI_INTENT_NONE",
            datatype="NIFTI_TYPE_FLOAT32", meta=nib.gifti.GiftiMetaData({"Name": name, "Label": str(k + 1)})))
    return img


def gifti_dseg(labels: np.ndarray, table: LabelTable, hemi: str):
    """Label map (0 = medial wall / unknown, 1..K) with a GIFTI label table; ``labels`` (10242,)."""
    import nibabel as nib
    labeltable = nib.gifti.GiftiLabelTable()
    entries = [(0, "Unknown", (0, 0, 0), 0.0)] + [
        (i + 1, name, tuple(int(v) for v in table.colors[i]), 1.0) for i, name in enumerate(table.names)]
    for key, name, rgb, alpha in entries:
        lab = nib.gifti.GiftiLabel(key=key, red=rgb[0] / 255, green=rgb[1] / 255, blue=rgb[2] / 255, alpha=alpha)
        lab.label = name
        labeltable.labels.append(lab)
    img = nib.gifti.GiftiImage(meta=_meta(hemi), labeltable=labeltable)
    img.add_gifti_data_array(nib.gifti.GiftiDataArray(
        np.ascontiguousarray(labels, dtype=np.int32), intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32"))
    return img


def gifti_scalar(values: np.ndarray, name: str, hemi: str):
    """One float32 data array (e.g. uncertainty); ``values`` has shape (10242,)."""
    import nibabel as nib
    img = nib.gifti.GiftiImage(meta=_meta(hemi))
    img.add_gifti_data_array(nib.gifti.GiftiDataArray(
        np.ascontiguousarray(values, dtype=np.float32), intent="NIFTI_INTENT_ESTIMATE",
        datatype="NIFTI_TYPE_FLOAT32", meta=nib.gifti.GiftiMetaData({"Name": name})))
    return img


def _meta(hemi: str):
    import nibabel as nib
    return nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": _STRUCTURE[hemi]})


# --------------------------------------------------------------------------- NIfTI
def nifti_image(full: np.ndarray, space: SpaceInfo, intent: str | None = None):
    """Reshape a full-space array (n_total,) or (n_total, K) onto the grid; source affine kept."""
    import nibabel as nib
    shape = tuple(space.grid_shape) + tuple(full.shape[1:])
    data = np.asarray(full).reshape(shape, order="C")
    img = nib.Nifti1Image(data, np.asarray(space.affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.set_qform(np.asarray(space.affine, dtype=np.float64), code=1)
    img.set_sform(np.asarray(space.affine, dtype=np.float64), code=2 if "MNI" not in space.space else 4)
    if intent is not None:
        img.header.set_intent(intent)
    return img


# --------------------------------------------------------------------------- files
def save_image(img: Any, path: Path) -> Path:
    """Save a nibabel image atomically; the format follows the name (``.func.gii``, ``.nii.gz``)."""
    import nibabel as nib
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)






