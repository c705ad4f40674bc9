"""CIFTI-2 files of the fsLR space, through ``nibabel.cifti2``: dense time series in, dense scalars and labels out.

A ``*.dtseries.nii`` holds a (frames x grayordinates) matrix: a series axis (frames, step and
unit) and a brain-model axis (for each structure, its mesh vertices or its voxels). The cortex
is ``CIFTI_STRUCTURE_CORTEX_LEFT`` and ``_RIGHT``, each a list of vertices of a 32,492-vertex
hemisphere (59,412 in all for the 91k grayordinates, the medial wall left out); subcortical
structures follow as voxels. :func:`scan_cifti` reads the header only; :func:`read_cortex` the
cortical columns. Maps are written with the cortex brain models of the standard 91k
grayordinates (:func:`cortex_axis`), as Connectome Workbench writes them: one map per network in
a ``dscalar``, one label map with its label table in a ``dlabel``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import atomic_write

from .base import corrupt_file

CORTEX = {"L": "CIFTI_STRUCTURE_CORTEX_LEFT", "R": "CIFTI_STRUCTURE_CORTEX_RIGHT"}
"""The cortical structures of a CIFTI brain-model axis, by hemisphere."""
INTENTS = {"dtseries": "ConnDenseSeries", "dscalar": "ConnDenseScalar", "dlabel": "ConnDenseLabel"}
"""NIfTI intents of the dense CIFTI files."""
_KINDS = {"SeriesAxis": "a dtseries", "ScalarAxis": "a dscalar", "LabelAxis": "a dlabel"}


@dataclass(frozen=True)
class CiftiHeader:
    """What the header of a dense time series says.

    Attributes
    ----------
    n_frames : int
    step : float
        Seconds between frames (the series axis).
    n_grayordinates : int
        Columns of the matrix, cortex and subcortex.
    cortex : dict
        ``{"L": (columns, vertices), "R": ...}``: the slice of each hemisphere's columns and the
        mesh vertices they hold, int64 of shape (n_columns,).
    surface_vertices : dict
        ``{"L": n, "R": n}``: vertices of each hemisphere's mesh.
    """

    n_frames: int
    step: float
    n_grayordinates: int
    cortex: dict[str, tuple[slice, np.ndarray]]
    surface_vertices: dict[str, int]

    @property
    def n_cortex(self) -> int:
        return sum(v.size for _, v in self.cortex.values())


@contextmanager
def _quiet_nibabel() -> Iterator[None]:
    level = nib.imageglobals.logger.level
    nib.imageglobals.logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        nib.imageglobals.logger.setLevel(level)


def _load(path: Path) -> nib.Cifti2Image:
    try:
        with _quiet_nibabel():  # CIFTI's NIfTI-2 header has no voxel sizes, which nibabel logs
            img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise corrupt_file(path, exc) from exc
    if not isinstance(img, nib.Cifti2Image):
        raise BadInputError(f"{Path(path).name} is not a CIFTI-2 file", "a CIFTI-2 dense time series "
                            "(*_bold.dtseries.nii)", type(img).__name__, "pass the CIFTI output of fMRIPrep, "
                            "HCP or XCP-D")
    return img


def scan_cifti(path: Path) -> CiftiHeader:
    """The header of a dense time series (no data read).

    Raises
    ------
    BadInputError
        Not CIFTI-2, a dscalar or dlabel instead of a dtseries, a series in other units than
        seconds, no cortex structures.
    """
    img = _load(path)
    name = Path(path).name
    try:
        series, models = img.header.get_axis(0), img.header.get_axis(1)
    except Exception as exc:  # nibabel raises on malformed CIFTI XML
        raise corrupt_file(path, exc) from exc
    kind = type(series).__name__
    if not isinstance(series, nib.cifti2.SeriesAxis):
        raise BadInputError(f"{name} is {_KINDS.get(kind, 'not a dense time series')}", "a dense time series "
                            "(*_bold.dtseries.nii, a series axis of frames)", f"a {kind}",
                            "pass the preprocessed BOLD series, not a map")
    if series.unit != "SECOND":
        raise BadInputError(f"The series axis of {name} is in {series.unit}", "frames spaced in SECOND",
                            series.unit, "pass a BOLD time series (wb_command -cifti-change-timestep can "
                                         "fix a wrong unit)")
    if not isinstance(models, nib.cifti2.BrainModelAxis):
        raise BadInputError(f"{name} has no brain-model axis", "grayordinates (a dense CIFTI file)",
                            type(models).__name__, "pass a dense time series (dtseries), not a parcellated one")
    cortex, sizes = _cortex(models, name)
    return CiftiHeader(int(series.size), float(series.step), int(len(models)), cortex, sizes)


def _cortex(models: nib.cifti2.BrainModelAxis, name: str) -> tuple[dict, dict[str, int]]:
    """Columns and vertices of each cortex in a brain-model axis, and its mesh sizes."""
    cortex, sizes = {}, {}
    for structure, columns, sub in models.iter_structures():
        for hemi, wanted in CORTEX.items():
            if structure == wanted:
                cortex[hemi] = (columns, np.asarray(sub.vertex, dtype=np.int64))
                sizes[hemi] = int(sub.nvertices[wanted])
    missing = [CORTEX[h] for h in CORTEX if h not in cortex]
    if missing:
        raise BadInputError(f"{name} lacks cortical grayordinates", " and ".join(CORTEX.values()),
                            f"no {', '.join(missing)}", "pass a CIFTI file with both cortical surfaces")
    return cortex, sizes


def read_dense_maps(path: Path) -> tuple[nib.cifti2.Axis, dict[str, np.ndarray]]:
    """The maps of a dense file (dscalar, dlabel) on each full cortical hemisphere.

    Returns
    -------
    axis : nibabel Axis
        The file's map axis (``ScalarAxis`` names, ``LabelAxis`` label tables).
    values : dict
        ``{"L": ndarray (n_maps, n_hemi), "R": ...}``, 0 on vertices the file does not list.
    """
    img = _load(path)
    maps, models = img.header.get_axis(0), img.header.get_axis(1)
    if not isinstance(models, nib.cifti2.BrainModelAxis):
        raise BadInputError(f"{Path(path).name} is not a dense CIFTI file", "grayordinates (dscalar, dlabel)",
                            type(models).__name__, "pass a dense map")
    cortex, sizes = _cortex(models, Path(path).name)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    out = {}
    for hemi, (columns, vertices) in cortex.items():
        full = np.zeros((data.shape[0], sizes[hemi]), dtype=np.float32)
        full[:, vertices] = data[:, columns]
        out[hemi] = full
    return maps, out


def read_cortex(path: Path, header: CiftiHeader) -> dict[str, np.ndarray]:
    """The cortical columns of each hemisphere, float32 ``{"L": (n_frames, n_columns), "R": ...}``."""
    proxy = _load(path).dataobj
    if tuple(proxy.shape) != (header.n_frames, header.n_grayordinates):
        raise corrupt_file(path, None)
    try:  # the cortical columns only: subcortical voxels are not read into memory
        return {hemi: np.asarray(proxy[:, columns], dtype=np.float32) for hemi, (columns, _) in header.cortex.items()}
    except Exception as exc:  # truncated data
        raise corrupt_file(path, exc) from exc


# --------------------------------------------------------------------------- writing
def cortex_axis(vertices: Mapping[str, np.ndarray], n_hemi: int) -> nib.cifti2.BrainModelAxis:
    """The brain-model axis of both cortices: ``vertices[hemi]`` on an ``n_hemi``-vertex mesh."""
    left = nib.cifti2.BrainModelAxis.from_surface(np.asarray(vertices["L"]), n_hemi, "CortexLeft")
    right = nib.cifti2.BrainModelAxis.from_surface(np.asarray(vertices["R"]), n_hemi, "CortexRight")
    return left + right


def save_cifti(data: np.ndarray, axes: Sequence[nib.cifti2.Axis], kind: str, path: Path) -> Path:
    """Write a dense CIFTI-2 file atomically; ``kind`` is a key of :data:`INTENTS`."""
    img = nib.Cifti2Image(np.asarray(data, dtype=np.float32), header=tuple(axes))
    img.nifti_header.set_intent(INTENTS[kind])
    with atomic_write(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def scalar_maps(values: np.ndarray, names: Sequence[str], models: nib.cifti2.BrainModelAxis,
                path: Path) -> Path:
    """A ``dscalar``: one map per name; ``values`` has shape (n_grayordinates, n_maps)."""
    return save_cifti(np.asarray(values).T, (nib.cifti2.ScalarAxis(list(names)), models), "dscalar", path)


def label_map(labels: np.ndarray, names: Sequence[str], colors: np.ndarray, models: nib.cifti2.BrainModelAxis,
              path: Path, map_name: str) -> Path:
    """A ``dlabel``: labels 0..K (0 = ``???``, unassigned) with the label table (names, colours) inside."""
    table = {0: ("???", (0.0, 0.0, 0.0, 0.0))}
    table.update({i + 1: (name, (*(float(c) / 255 for c in colors[i][:3]), 1.0)) for i, name in enumerate(names)})
    axis = nib.cifti2.LabelAxis([map_name], [table])
    return save_cifti(np.asarray(labels, dtype=np.float32)[None, :], (axis, models), "dlabel", path)


def series(data: np.ndarray, step: float, models: nib.cifti2.BrainModelAxis, path: Path) -> Path:
    """A ``dtseries``: ``data`` of shape (n_frames, n_grayordinates), ``step`` seconds apart."""
    axis = nib.cifti2.SeriesAxis(start=0.0, step=float(step), size=int(data.shape[0]), unit="SECOND")
    return save_cifti(data, (axis, models), "dtseries", path)


__all__ = ["CORTEX", "CiftiHeader", "INTENTS", "cortex_axis", "label_map", "read_cortex", "read_dense_maps",
           "save_cifti", "scalar_maps", "scan_cifti", "series"]
