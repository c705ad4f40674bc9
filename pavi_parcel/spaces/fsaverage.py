"""fsaverage surfaces (GIFTI, one file per hemisphere): fsaverage3 to fsaverage (164k) as instances of one class.

FreeSurfer's fsaverage meshes are nested icosahedra: the first ``10 * 4**k + 2`` vertices of each
hemisphere of a denser mesh are the vertices of the coarser one. That gives the default
fingerprint seeds (the fsaverage3 vertices, 642 per hemisphere) at every density, and lets an
atlas on a denser mesh be read on a coarser one by keeping its first vertices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pavi_parcel.exceptions import BadInputError, BadInputErrors

from . import gifti
from .base import CleanedRun, RunHeader, check_finite, check_some_valid
from .meshes import MeshFiles, find_fsaverage_mesh, fsaverage_folders
from .signals import clean_signals, temporal_snr
from .surface import SurfaceSpace

FSAVERAGE_VERTICES = {"fsaverage3": 642, "fsaverage4": 2562, "fsaverage5": 10242, "fsaverage6": 40962,
                      "fsaverage": 163842, "fsaverage7": 163842}
"""Vertices per hemisphere of each fsaverage mesh."""
FSAVERAGE_DENSITIES = {"642": "fsaverage3", "3k": "fsaverage4", "10k": "fsaverage5", "41k": "fsaverage6",
                       "164k": "fsaverage"}
"""``den`` labels of fMRIPrep's ``space-fsaverage_den-*`` names, and the mesh each one is."""
SEED_MESH_VERTICES = FSAVERAGE_VERTICES["fsaverage3"]
TEMPLATEFLOW = "https://templateflow.s3.amazonaws.com"
"""Default seeds: the fsaverage3 vertices of each hemisphere (nested in every denser mesh)."""


class FsaverageSpace(SurfaceSpace):
    """An fsaverage mesh: both hemispheres, left then right, ``n_hemi`` vertices each.

    Parameters
    ----------
    name : str
        ``fsaverage3`` ... ``fsaverage6``, ``fsaverage7`` or ``fsaverage``.
    mesh_dir : str or Path, optional
        A folder to look in first for the mesh (see :mod:`.meshes`); fsaverage5 ships with nilearn.
    """

    KIND = "fsaverage"
    map_format = "gifti"
    file_kind = "GIFTI"
    bold_parts = ("L", "R")

    def __init__(self, name: str, mesh_dir: str | Path | None = None):
        if name not in FSAVERAGE_VERTICES:
            raise BadInputError(f"Unsupported surface space {name!r}", "one of " + ", ".join(FSAVERAGE_VERTICES),
                                name, "set data.space to an fsaverage mesh fMRIPrep wrote (e.g. fsaverage5)")
        super().__init__(name, FSAVERAGE_VERTICES[name], mesh_dir)

    def mesh_files(self) -> MeshFiles | None:
        return find_fsaverage_mesh(self.name, self.n_hemi, self.mesh_dir)

    def mesh_places(self) -> str:
        return ", ".join(str(f) for f in fsaverage_folders(self.name, self.mesh_dir))

    # ------------------------------------------------------------------ runs
    def scan_run(self, bold: Sequence[Path], mask: Path | None, key: str) -> RunHeader:
        shapes = [gifti.scan_gifti(p) for p in bold]
        problems = [BadInputError(f"{p.name} has {v} vertices", f"{self.n_hemi} vertices ({self.name})", str(v),
                                  "check that data.space matches the files") for p, (v, _) in zip(bold, shapes)
                    if v != self.n_hemi]
        if shapes[0][1] != shapes[1][1]:
            problems.append(BadInputError(
                f"Hemispheres of run {key} have different numbers of frames",
                "the same number of frames in hemi-L and hemi-R", f"{shapes[0][1]} (L) and {shapes[1][1]} (R)",
                "re-run fMRIPrep for this run or exclude the participant"))
        elif shapes[0][1] < 2:
            problems.append(BadInputError(f"{bold[0].name} is not a time series",
                                          "one data array per frame (at least 2 frames)",
                                          f"{shapes[0][1]} frame", "pass the preprocessed BOLD series "
                                          "(*_bold.func.gii), not a single map"))
        if problems:
            raise BadInputErrors(problems)
        return RunHeader(shapes[0][1], self.n_total, self)

    def clean_run(self, bold: Sequence[Path], mask: Path | None, n_frames: int, kept: np.ndarray,
                  regressors: Any, sample_mask: np.ndarray | None, cleaning: Mapping[str, Any],
                  key: str) -> tuple[CleanedRun, dict[str, Any]]:
        hemis = []
        for path in bold:
            hemi = gifti.read_timeseries(path)
            if hemi.shape[1] != n_frames:
                raise BadInputError(f"{path.name} has {hemi.shape[1]} frames", f"{n_frames} frames as its header",
                                    f"{hemi.shape[1]}", "re-run fMRIPrep for this run")
            check_finite(hemi, path)
            hemis.append(hemi)
        valid = [np.ptp(h[:, kept], axis=1) > 0 for h in hemis]
        check_some_valid(valid, key)
        signals = np.concatenate([h[v].T for h, v in zip(hemis, valid)], axis=1)
        del hemis
        tsnr = temporal_snr(signals, kept)
        data = clean_signals(signals, regressors, sample_mask, cleaning)
        vertex_index = np.concatenate([np.flatnonzero(valid[0]), self.n_hemi + np.flatnonzero(valid[1])])
        return CleanedRun(data, vertex_index, tsnr), self.attrs()

    def header_tr(self, path: Path) -> tuple[str, float] | None:
        step = gifti.gifti_timestep(path)
        return None if step is None else (f"TimeStep of {Path(path).name}", step)

    def bold_names(self, stem: str) -> list[str]:
        return [f"{stem}_hemi-{h.label}_space-{self.name}_bold.func.gii" for h in self.hemispheres]

    # ------------------------------------------------------------------ fingerprints
    def default_seeds(self, vertex_index: np.ndarray, spacing_mm: float) -> np.ndarray:
        """The fsaverage3 vertices of both hemispheres among ``vertex_index`` (about 1,175 on cortex)."""
        valid = np.zeros(self.n_total, dtype=bool)
        valid[np.asarray(vertex_index)] = True
        nested = np.concatenate([np.arange(SEED_MESH_VERTICES), self.n_hemi + np.arange(SEED_MESH_VERTICES)])
        return nested[valid[nested]].astype(np.int64)

    def estimate_seeds(self, n_points: int, spacing_mm: float) -> int:
        return min(2 * SEED_MESH_VERTICES, n_points)

    # ------------------------------------------------------------------ atlases on this mesh
    def from_nested(self, hemi_values: Sequence[np.ndarray], source: str) -> np.ndarray:
        """Full-space values from per-hemisphere values on this mesh or a denser fsaverage mesh.

        Parameters
        ----------
        hemi_values : (left, right) arrays of shape (n_vertices, ...)
        source : str
            What the values are, for messages.

        Raises
        ------
        BadInputError
            Values on a mesh that is not an fsaverage density at least as dense as this one.
        """
        sizes = sorted({v for k, v in FSAVERAGE_VERTICES.items() if v >= self.n_hemi})
        for part in hemi_values:
            if part.shape[0] not in sizes:
                raise BadInputError(f"{source} is not on an fsaverage mesh", "one of " + ", ".join(
                                    f"{n:,}" for n in sizes) + f" vertices per hemisphere ({self.name} or denser)",
                                    f"{part.shape[0]} vertices", f"resample the atlas to {self.name}")
        return np.concatenate([np.asarray(part)[:self.n_hemi] for part in hemi_values], axis=0)

    # ------------------------------------------------------------------ maps
    def map_paths(self, folder: Path, prefix: str, seg: str) -> dict[str, list[Path]]:
        tails = {"probseg": "probseg.func.gii", "dseg": "dseg.label.gii", "entropy": "stat-entropy_statmap.func.gii"}
        return {kind: [Path(folder) / f"{prefix}hemi-{h.label}_space-{self.name}_{seg}_{tail}"
                       for h in self.hemispheres] for kind, tail in tails.items()}

    def spatial_reference(self, hemi: str | None) -> str | None:
        den = next(d for d, name in FSAVERAGE_DENSITIES.items() if name == self.name)
        return f"{TEMPLATEFLOW}/tpl-fsaverage/tpl-fsaverage_hemi-{hemi or 'L'}_den-{den}_sphere.surf.gii"

    def write_map(self, kind: str, values: np.ndarray, paths: list[Path], names: list[str],
                  colors: np.ndarray) -> list[Path]:
        written = []
        for hemi, path in zip(self.hemispheres, paths):
            part = values[hemi.rows]
            if kind == "probseg":
                img = gifti.gifti_probseg(part, names, hemi.structure)
            elif kind == "dseg":
                img = gifti.gifti_dseg(part, names, colors, hemi.structure)
            else:
                img = gifti.gifti_scalar(part, "entropy", hemi.structure)
            written.append(gifti.save_image(img, path))
        return written


__all__ = ["FSAVERAGE_DENSITIES", "FSAVERAGE_VERTICES", "FsaverageSpace", "SEED_MESH_VERTICES"]
