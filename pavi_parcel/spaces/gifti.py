"""GIFTI files of surface spaces: scanning a time series without decoding it, reading it, writing maps."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pavi_parcel.io.atomic import atomic_write

from .base import corrupt_file


def scan_gifti(path: Path, chunk: int = 1 << 22) -> tuple[int, int]:
    """Vertices and frames of a GIFTI time series from its XML tags, without decoding data.

    Returns
    -------
    (n_vertices, n_frames) : tuple of int
        ``Dim0`` of the first data array; one frame per data array (fMRIPrep), or ``Dim1``
        of a single two-dimensional array.

    Raises
    ------
    BadInputError
        Unreadable, truncated (no closing ``</GIFTI>``) or without data arrays.
    """
    tag = re.compile(rb"<DataArray\b[^>]*>")
    first, count = b"", 0
    tail = b""
    try:
        with open(path, "rb") as handle:
            while True:
                block = handle.read(chunk)
                if not block:
                    break
                text = tail + block
                last = 0
                for match in tag.finditer(text):
                    first = first or match.group(0)
                    count += 1
                    last = match.end()
                cut = max(last, len(text) - 4096)
                tail = text[cut:]
    except OSError as exc:
        raise corrupt_file(path, exc) from exc
    if not tail.rstrip().endswith(b"</GIFTI>") or not count:
        raise corrupt_file(path, None)
    dims = {k.decode(): int(v) for k, v in re.findall(rb'\b(Dim\d|Dimensionality)="(\d+)"', first)}
    n_vertices = dims.get("Dim0", 0)
    if count == 1 and dims.get("Dimensionality", 1) == 2:
        return n_vertices, dims.get("Dim1", 0)
    return n_vertices, count


def read_timeseries(path: Path) -> np.ndarray:
    """A hemisphere's time series, float32 of shape (n_vertices, n_frames).

    Raises
    ------
    BadInputError
        An unreadable or corrupt file.
    """
    try:
        values = np.asarray(nib.load(str(path)).agg_data(), dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for corrupt arrays
        raise corrupt_file(path, exc) from exc
    return values.reshape(values.shape[0], -1)


def gifti_probseg(probs: np.ndarray, names: list[str], structure: str) -> nib.gifti.GiftiImage:
    """One data array per network (label order), float32; ``probs`` has shape (n_hemisphere_vertices, K)."""
    img = nib.gifti.GiftiImage(meta=_meta(structure))
    for k, name in enumerate(names):
        img.add_gifti_data_array(nib.gifti.GiftiDataArray(
            np.ascontiguousarray(probs[:, k], dtype=np.float32), intent="NIFTI_INTENT_NONE",
            datatype="NIFTI_TYPE_FLOAT32", meta=nib.gifti.GiftiMetaData({"Name": name, "Label": str(k + 1)})))
    return img


def gifti_dseg(labels: np.ndarray, names: list[str], colors: np.ndarray, structure: str) -> nib.gifti.GiftiImage:
    """Label map (0 = medial wall / unknown, 1..K) with a GIFTI label table; ``labels`` (n_hemisphere_vertices,)."""
    labeltable = nib.gifti.GiftiLabelTable()
    entries = [(0, "Unknown", (0, 0, 0), 0.0)] + [
        (i + 1, name, tuple(int(v) for v in colors[i]), 1.0) for i, name in enumerate(names)]
    for key, name, rgb, alpha in entries:
        lab = nib.gifti.GiftiLabel(key=key, red=rgb[0] / 255, green=rgb[1] / 255, blue=rgb[2] / 255, alpha=alpha)
        lab.label = name
        labeltable.labels.append(lab)
    img = nib.gifti.GiftiImage(meta=_meta(structure), labeltable=labeltable)
    img.add_gifti_data_array(nib.gifti.GiftiDataArray(
        np.ascontiguousarray(labels, dtype=np.int32), intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32"))
    return img


def gifti_scalar(values: np.ndarray, name: str, structure: str) -> nib.gifti.GiftiImage:
    """One float32 data array (e.g. uncertainty); ``values`` has shape (n_hemisphere_vertices,)."""
    img = nib.gifti.GiftiImage(meta=_meta(structure))
    img.add_gifti_data_array(nib.gifti.GiftiDataArray(
        np.ascontiguousarray(values, dtype=np.float32), intent="NIFTI_INTENT_ESTIMATE",
        datatype="NIFTI_TYPE_FLOAT32", meta=nib.gifti.GiftiMetaData({"Name": name})))
    return img


def _meta(structure: str) -> nib.gifti.GiftiMetaData:
    return nib.gifti.GiftiMetaData({"AnatomicalStructurePrimary": structure})


def save_image(img: Any, path: Path) -> Path:
    """Save a nibabel image atomically; the format follows the name (``.func.gii``, ``.nii.gz``)."""
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


_TIMESTEP = re.compile(rb"<Name>\s*(?:<!\[CDATA\[)?\s*TimeStep\s*(?:\]\]>)?\s*</Name>\s*"
                       rb"<Value>\s*(?:<!\[CDATA\[)?\s*([^<\]\s]*)")


def gifti_timestep(path: Path, max_bytes: int = 1 << 20) -> float | None:
    """The TR in seconds from a GIFTI's ``TimeStep`` meta, reading only the file's head.

    ``TimeStep`` is in milliseconds in FreeSurfer's and fMRIPrep's GIFTIs; a value below
    20 cannot be a BOLD TR in milliseconds and is read as seconds. None when absent or 0.
    """
    head = b""
    try:
        with open(path, "rb") as handle:
            while len(head) < max_bytes:
                chunk = handle.read(65536)
                head += chunk
                if not chunk or b"<Data>" in head or b"<Data " in head:
                    break
    except OSError:
        return None
    match = _TIMESTEP.search(head.split(b"<Data>", 1)[0])
    try:
        value = float(match.group(1)) if match else 0.0
    except ValueError:
        return None
    if not value > 0:
        return None
    return value if value < 20 else value / 1000.0


__all__ = ["gifti_dseg", "gifti_probseg", "gifti_scalar", "gifti_timestep", "read_timeseries", "save_image",
           "scan_gifti"]
