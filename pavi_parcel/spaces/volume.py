"""Volume spaces (NIfTI with fMRIPrep's brain mask): a template name and, once a run is read, its voxel grid.

Every volume template fMRIPrep writes (``MNI152NLin2009cAsym``, ``MNI152NLin6Asym`` ...) is a
:class:`VolumeSpace`; before a run is read the space has no grid (it names the template), after
it carries the grid shape and voxel-to-world affine every run of the cohort must share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from pavi_parcel.exceptions import BadInputError

from .base import CleanedRun, RunHeader, Space, check_finite, check_some_valid, corrupt_file
from .gifti import save_image
from .signals import temporal_snr


class VolumeSpace(Space):
    """Voxels of a template grid, flat C-order index.

    Parameters
    ----------
    name : str
        The template (BIDS ``space`` label).
    grid_shape : tuple of int, optional
        (x, y, z); None before a run is read.
    affine : ndarray of shape (4, 4), optional
    """

    KIND = "volume"
    map_format = "nifti"
    file_kind = "NIfTI"
    needs_mask = True

    def __init__(self, name: str, grid_shape: Sequence[int] | None = None, affine: np.ndarray | None = None):
        self.name = name
        self._grid = None if grid_shape is None else tuple(int(v) for v in grid_shape)
        self._affine = None if affine is None else np.asarray(affine, dtype=np.float64)
        self.n_total = 0 if self._grid is None else int(np.prod(self._grid))

    @property
    def grid_shape(self) -> tuple[int, ...] | None:
        return self._grid

    @property
    def affine(self) -> np.ndarray | None:
        return self._affine

    def to_attrs(self, attrs: Any) -> None:
        super().to_attrs(attrs)
        if self._grid is not None:
            attrs["grid_shape"] = np.asarray(self._grid, dtype=np.int64)
            attrs["affine"] = np.asarray(self._affine, dtype=np.float64)

    def same_grid(self, other: Space, atol: float = 1e-3) -> bool:
        """Whether ``other`` is on this grid (shape and affine)."""
        return (other.grid_shape == self._grid and other.affine is not None
                and np.allclose(other.affine, self._affine, atol=atol))

    # ------------------------------------------------------------------ runs
    def scan_run(self, bold: Sequence[Path], mask: Path | None, key: str) -> RunHeader:
        img = _load_header(bold[0])
        if len(img.shape) != 4 or img.shape[3] < 2:
            raise BadInputError(f"{bold[0].name} is not a 4-D time series", "a 4-D image (x, y, z, time)",
                                f"shape {tuple(img.shape)}", "pass the preprocessed BOLD series, not a single volume")
        brain = _load_header(mask)
        if tuple(brain.shape[:3]) != tuple(img.shape[:3]) or (len(brain.shape) > 3 and brain.shape[3] != 1) \
                or not np.allclose(brain.affine, img.affine, atol=1e-4):
            raise BadInputError(f"Brain mask {mask.name} is not on the grid of {bold[0].name}",
                                f"shape {tuple(img.shape[:3])} and the same affine", f"shape {tuple(brain.shape)}"
                                + ("" if np.allclose(brain.affine, img.affine, atol=1e-4) else " and another affine"),
                                "use the mask fMRIPrep wrote for this run")
        try:
            n_points = int(np.count_nonzero(np.asarray(brain.dataobj)))
        except Exception as exc:  # nibabel raises many types for truncated data
            raise corrupt_file(mask, exc) from exc
        if n_points == 0:
            raise BadInputError(f"Brain mask {mask.name} is empty", "some voxels inside the brain", "0 voxels",
                                "use the mask fMRIPrep wrote for this run")
        grid = VolumeSpace(self.name, img.shape[:3], img.affine)
        return RunHeader(int(img.shape[3]), n_points, grid)

    def clean_run(self, bold: Sequence[Path], mask: Path | None, n_frames: int, kept: np.ndarray,
                  regressors: Any, sample_mask: np.ndarray | None, cleaning: Mapping[str, Any],
                  key: str) -> tuple[CleanedRun, dict[str, Any]]:
        from nilearn.maskers import NiftiMasker

        try:
            img = nib.load(str(bold[0]))
            data = img.get_fdata(dtype=np.float32)
            brain = np.asarray(nib.load(str(mask)).dataobj).reshape(img.shape[:3]) > 0
        except Exception as exc:  # nibabel raises many types for truncated or corrupt files
            raise corrupt_file(bold[0], exc) from exc
        inside = data[brain]
        check_finite(inside, bold[0])
        valid = brain.copy()
        valid[brain] = np.ptp(inside[:, kept], axis=1) > 0
        tsnr = temporal_snr(inside.T, kept)
        del inside
        check_some_valid([valid], key)
        # Hand the masker the mask's bounding box only: C order within the box is C order in the
        # grid, so the columns still follow np.flatnonzero(valid), with less memory and time.
        corner = np.array([np.flatnonzero(valid.any(axis=tuple(a for a in range(3) if a != d)))[[0, -1]]
                           for d in range(3)])
        box = tuple(slice(lo, hi + 1) for lo, hi in corner)
        box_affine = img.affine @ np.r_[np.c_[np.eye(3), corner[:, 0]], [[0, 0, 0, 1]]]
        boxed = np.ascontiguousarray(data[box])
        del data
        masker = NiftiMasker(mask_img=nib.Nifti1Image(valid[box].astype(np.uint8), box_affine), **cleaning).fit()
        cleaned = masker.transform(nib.Nifti1Image(boxed, box_affine), confounds=regressors, sample_mask=sample_mask)
        grid = VolumeSpace(self.name, img.shape[:3], img.affine)
        return CleanedRun(np.asarray(cleaned, dtype=np.float32), np.flatnonzero(valid.ravel(order="C")), tsnr), \
            grid.attrs()

    def header_tr(self, path: Path) -> tuple[str, float] | None:
        tr = nifti_tr(path)
        return None if tr is None else (f"pixdim[4] of {Path(path).name}", tr)

    def bold_names(self, stem: str) -> list[str]:
        return [f"{stem}_space-{self.name}_desc-preproc_bold.nii.gz"]

    # ------------------------------------------------------------------ fingerprints
    def default_seeds(self, vertex_index: np.ndarray, spacing_mm: float) -> np.ndarray:
        """One seed per cube of side ``spacing_mm`` tiling the mask in world coordinates.

        The in-mask voxel nearest each cube's centre, for cubes at least half inside the mask:
        about 1,000 seeds on a whole-brain MNI mask at 12 mm.

        Parameters
        ----------
        vertex_index : ndarray of shape (n_voxels,)
            Flat C-order indices of the in-mask voxels.
        spacing_mm : float

        Returns
        -------
        ndarray of int64, shape (n_seeds,)
            Flat indices of the seed voxels, sorted.
        """
        vertex_index = np.asarray(vertex_index)
        ijk = np.stack(np.unravel_index(vertex_index, self._grid), axis=1).astype(np.float64)
        xyz = ijk @ self._affine[:3, :3].T + self._affine[:3, 3]
        cube = np.floor(xyz / spacing_mm).astype(np.int64)
        voxel_volume = abs(np.linalg.det(self._affine[:3, :3]))
        min_voxels = 0.5 * spacing_mm**3 / voxel_volume
        _, cube_id, counts = np.unique(cube, axis=0, return_inverse=True, return_counts=True)
        cube_id = cube_id.ravel()
        centre_dist = np.linalg.norm(xyz - (cube + 0.5) * spacing_mm, axis=1)
        order = np.lexsort((vertex_index, centre_dist, cube_id))     # nearest first within each cube
        first = order[np.r_[True, np.diff(cube_id[order]) != 0]]
        keep = first[counts[cube_id[first]] >= min_voxels]
        return np.sort(vertex_index[keep]).astype(np.int64)

    def estimate_seeds(self, n_points: int, spacing_mm: float, voxel_mm3: float = 8.0) -> int:
        """At most one seed per cube of ``spacing_mm`` (twice the mask volume over the cube's, for the box)."""
        return max(1, min(n_points, int(np.ceil(n_points * voxel_mm3 / spacing_mm**3 * 2))))

    # ------------------------------------------------------------------ neighbours
    def edges(self) -> np.ndarray:
        """Face-adjacent voxel pairs of the C-ordered grid, flat indices, shape (E, 2)."""
        shape = self._grid
        idx = np.arange(int(np.prod(shape))).reshape(shape)
        pairs = []
        for axis in range(len(shape)):
            if shape[axis] < 2:
                continue
            a = np.take(idx, np.arange(shape[axis] - 1), axis=axis).ravel()
            b = np.take(idx, np.arange(1, shape[axis]), axis=axis).ravel()
            pairs.append(np.stack([a, b], 1))
        return np.concatenate(pairs) if pairs else np.zeros((0, 2), dtype=np.int64)

    # ------------------------------------------------------------------ maps
    def map_paths(self, folder: Path, prefix: str, seg: str) -> dict[str, list[Path]]:
        tails = {"probseg": "probseg.nii.gz", "dseg": "dseg.nii.gz", "entropy": "stat-entropy_statmap.nii.gz"}
        return {kind: [Path(folder) / f"{prefix}space-{self.name}_{seg}_{tail}"] for kind, tail in tails.items()}

    def write_map(self, kind: str, values: np.ndarray, paths: list[Path], names: list[str],
                  colors: np.ndarray) -> list[Path]:
        if kind == "probseg":
            img = self.image(values)
        elif kind == "dseg":
            img = self.image(values.astype(np.int16), intent="label")
        else:
            img = self.image(values, intent="estimate")
        return [save_image(img, paths[0])]

    def image(self, full: np.ndarray, intent: str | None = None) -> nib.Nifti1Image:
        """Reshape a full-space array (n_total,) or (n_total, K) onto the grid; the source affine is kept."""
        shape = tuple(self._grid) + tuple(full.shape[1:])
        data = np.asarray(full).reshape(shape, order="C")
        img = nib.Nifti1Image(data, self._affine)
        img.header.set_xyzt_units("mm")
        img.set_qform(self._affine, code=1)
        img.set_sform(self._affine, code=2 if "MNI" not in self.name else 4)
        if intent is not None:
            img.header.set_intent(intent)
        return img


def _load_header(path: Path) -> nib.spatialimages.SpatialImage:
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise corrupt_file(path, exc) from exc


def nifti_tr(path: Path) -> float | None:
    """The TR in seconds from a NIfTI header's ``pixdim[4]`` (None when absent or 0).

    Raises
    ------
    BadInputError
        When the header cannot be read.
    """
    try:
        header = nib.load(str(path)).header
    except Exception as exc:  # nibabel raises many types for broken files
        raise BadInputError(f"Cannot read the NIfTI header of {path}", "a readable NIfTI image",
                            f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                            "re-run fMRIPrep for this run or exclude the participant") from exc
    zooms = header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = header.get_xyzt_units()[1]
    scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}.get(unit)
    return None if scale is None else float(zooms[3]) * scale


__all__ = ["VolumeSpace", "nifti_tr"]
