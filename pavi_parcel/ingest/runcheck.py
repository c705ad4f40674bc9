"""The cheap pass of ingestion: every run's headers, grid and confounds, checked before any data is read.

:func:`plan_runs` looks at what is cheap to read (GIFTI tags, NIfTI headers, brain masks,
confounds tables) for every run whose stored time series is missing or out of date, and
reports every problem at once (:class:`~pavi_parcel.exceptions.BadInputErrors`) before the
expensive pass of :mod:`pavi_parcel.ingest` loads, masks and cleans the data. The pipeline
runs it in its validation pass, so that nothing is written when an input is broken.

Checks: frames and vertices per hemisphere, single-frame GIFTIs, 4-D volumes, masks on the
run's grid and not empty, one voxel grid for the whole cohort, truncated or unreadable images,
confounds tables (rows, columns, n/a values, frames left after scrubbing).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import nibabel as nib
import numpy as np

from pavi_parcel.bids.discovery import BoldRun
from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.settings.schema import IngestSettings
from pavi_parcel.spaces.base import SpaceInfo
from pavi_parcel.stores.timeseries import read_run_attrs

from .confounds import NO_CONFOUNDS, RunConfounds, load_run_confounds

INGEST_FORMAT = 1  # bump when the stored content changes for the same inputs and settings
MESH_VERTICES = {"fsaverage3": 642, "fsaverage4": 2562, "fsaverage5": 10242, "fsaverage6": 40962,
                 "fsaverage7": 163842, "fsaverage": 163842}


@dataclass
class _Plan:
    """A validated run, ready for the expensive pass."""

    index: int
    run: BoldRun
    path: Path
    fingerprint: str
    n_frames: int
    confounds: RunConfounds


@dataclass
class IngestPlan:
    """Outcome of the cheap validation pass over a cohort's runs (nothing written yet).

    Attributes
    ----------
    paths : list of Path
        ``work_dir/timeseries/<run.key>.h5``, one per run, in the order of the runs.
    todo : list
        The runs still to ingest (their store is missing or was made from other inputs).
    n_points : int
        Upper bound on the vertices (voxels) valid in every run: the fewest mesh vertices or
        brain-mask voxels of any run (what K can at most be).
    frames : list of int
        Frames of every run, in the order of the runs (for the disk estimate).
    """

    paths: list[Path]
    todo: list[_Plan]
    n_points: int
    frames: list[int]


def plan_runs(runs: Sequence[BoldRun], work_dir: Path, settings: IngestSettings) -> IngestPlan:
    """Check every run cheaply (headers, grids, confounds) without writing anything.

    Parameters
    ----------
    runs : sequence of BoldRun
    work_dir : Path
    settings : IngestSettings
        Cleaning settings (``ingest.*``): they enter each run's fingerprint.

    Returns
    -------
    IngestPlan

    Raises
    ------
    BadInputErrors
        Every problem found, one entry each.
    """
    runs = list(runs)
    _check_unique_keys(runs)
    folder = Path(work_dir) / "timeseries"
    paths = [folder / f"{run.key}.h5" for run in runs]
    todo, done = [], []
    for i, (run, path) in enumerate(zip(runs, paths)):
        fingerprint = run_fingerprint(run, settings)
        if (read_run_attrs(path) or {}).get("fingerprint") != fingerprint:
            todo.append((i, run, path, fingerprint))
        else:
            done.append((i, run, path))
    plans, shapes = _validate(todo, settings)
    shapes.update({i: _stored_shape(path) for i, _, path in done})
    _check_one_grid(runs, shapes)
    n_points = min((points for _, points, _ in shapes.values()), default=0)
    return IngestPlan(paths, plans, int(n_points), [shapes[i][0] for i in range(len(runs))])


def run_fingerprint(run: BoldRun, settings: IngestSettings) -> str:
    """Hash of the run's input files (name, size, modification time), TR, space and settings."""
    files = [*run.bold, *(p for p in (run.mask, run.confounds) if p is not None)]
    files += [p.with_name(p.name.split(".", 1)[0] + ".json") for p in files]
    stamp = []
    for path in files:
        try:
            stat = Path(path).stat()
            stamp.append([Path(path).name, stat.st_size, stat.st_mtime_ns])
        except OSError:
            stamp.append([Path(path).name, None, None])
    blob = json.dumps({"format": INGEST_FORMAT, "files": stamp, "tr": run.tr, "space": run.space,
                       "settings": settings.to_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _check_unique_keys(runs: list[BoldRun]) -> None:
    seen: dict[str, BoldRun] = {}
    for run in runs:
        if run.key in seen:
            raise BadInputError(f"Two runs share the name {run.key}", "one run per subject, session, task and run",
                                f"{seen[run.key].bold[0].name} and {run.bold[0].name}",
                                "keep one of them (other entities such as acq- are not told apart)")
        seen[run.key] = run


# --------------------------------------------------------------------------- cheap pass
def _validate(todo: list[tuple[int, BoldRun, Path, str]], settings: IngestSettings) -> tuple[list[_Plan], dict]:
    plans, errors, no_confounds, shapes = [], [], [], {}
    for space in sorted({run.space for _, run, _, _ in todo if run.is_surface}):
        try:
            _mesh(space)  # once per space: a missing mesh is one problem, not one per run
        except BadInputError as exc:
            raise BadInputErrors([exc]) from exc
    for index, run, path, fingerprint in todo:
        try:
            n_frames, n_points, grid = _check_headers(run)
            shapes[index] = (n_frames, n_points, grid)
            confounds = _check_confounds(run, n_frames, settings, no_confounds)
            plans.append(_Plan(index, run, path, fingerprint, n_frames, confounds))
        except BadInputErrors as exc:
            errors.extend(exc.errors)
        except BadInputError as exc:
            errors.append(exc)
    if errors:
        raise BadInputErrors(errors)
    if no_confounds:
        names = ", ".join(no_confounds[:5]) + (f" and {len(no_confounds) - 5} more" if len(no_confounds) > 5 else "")
        warnings.warn(f"No fMRIPrep confounds table for {len(no_confounds)} run(s) ({names}): cleaning them with "
                      "detrending and high-pass filtering only, without confound regression or scrubbing. "
                      "Set ingest.on_missing_confounds=error to stop instead.", UserWarning, stacklevel=3)
    return plans, shapes


def _stored_shape(path: Path) -> tuple[int, int, tuple | None]:
    """(frames, valid points, grid) of a run already in the store."""
    attrs = read_run_attrs(path) or {}
    with h5py.File(path, "r") as h5:
        n_valid = int(h5["vertex_index"].shape[0])
    grid = None
    if attrs.get("grid_shape") is not None:
        grid = (tuple(int(v) for v in attrs["grid_shape"]), np.asarray(attrs["affine"], dtype=np.float64))
    return int(attrs.get("n_frames_total", 0)), n_valid, grid


def _check_one_grid(runs: list[BoldRun], shapes: dict[int, tuple]) -> None:
    """Volume runs must share one voxel grid: fingerprints compare voxels across the cohort."""
    grids: dict[tuple, list[str]] = {}
    for i, (_, _, grid) in sorted(shapes.items()):
        if grid is not None:
            shape, affine = grid
            grids.setdefault((shape, tuple(np.round(affine, 3).ravel())), []).append(runs[i].key)
    if len(grids) > 1:
        listing = "; ".join(f"shape {shape} voxel {abs(aff[0]):g} mm in {len(keys)} run(s) (e.g. {keys[0]})"
                            for (shape, aff), keys in grids.items())
        raise BadInputErrors([BadInputError(
            "Runs are on different voxel grids", "one grid (shape and affine) for the whole cohort",
            listing, "pick one resolution with --space NAME:res-2, or resample the runs to one grid")])


def _check_headers(run: BoldRun) -> tuple[int, int, tuple | None]:
    """Frames, candidate points and grid of the run from headers; raises for unusable layouts."""
    if run.is_surface:
        expected = MESH_VERTICES.get(run.space)
        if expected is None:
            raise BadInputError(f"Unsupported surface space {run.space}", "one of " + ", ".join(MESH_VERTICES),
                                run.space, "use --space fsaverage5")
        shapes = [scan_gifti(p) for p in run.bold]
        problems = [BadInputError(f"{p.name} has {v} vertices", f"{expected} vertices ({run.space})", str(v),
                                  "check --space matches the files") for p, (v, _) in zip(run.bold, shapes)
                    if v != expected]
        if shapes[0][1] != shapes[1][1]:
            problems.append(BadInputError(
                f"Hemispheres of run {run.key} have different numbers of frames",
                "the same number of frames in hemi-L and hemi-R", f"{shapes[0][1]} (L) and {shapes[1][1]} (R)",
                "re-run fMRIPrep for this run or exclude the participant"))
        elif shapes[0][1] < 2:
            problems.append(BadInputError(f"{run.bold[0].name} is not a time series",
                                          "one data array per frame (at least 2 frames)",
                                          f"{shapes[0][1]} frame", "pass the preprocessed BOLD series "
                                          "(*_bold.func.gii), not a single map"))
        if problems:
            raise BadInputErrors(problems)
        return shapes[0][1], 2 * expected, None
    img = _load_header(run.bold[0])
    if len(img.shape) != 4 or img.shape[3] < 2:
        raise BadInputError(f"{run.bold[0].name} is not a 4-D time series", "a 4-D image (x, y, z, time)",
                            f"shape {tuple(img.shape)}", "pass the preprocessed BOLD series, not a single volume")
    mask = _load_header(run.mask)
    if tuple(mask.shape[:3]) != tuple(img.shape[:3]) or (len(mask.shape) > 3 and mask.shape[3] != 1) \
            or not np.allclose(mask.affine, img.affine, atol=1e-4):
        raise BadInputError(f"Brain mask {run.mask.name} is not on the grid of {run.bold[0].name}",
                            f"shape {tuple(img.shape[:3])} and the same affine", f"shape {tuple(mask.shape)}"
                            + ("" if np.allclose(mask.affine, img.affine, atol=1e-4) else " and another affine"),
                            "use the mask fMRIPrep wrote for this run")
    try:
        n_points = int(np.count_nonzero(np.asarray(mask.dataobj)))
    except Exception as exc:  # nibabel raises many types for truncated data
        raise _corrupt(run.mask, exc) from exc
    if n_points == 0:
        raise BadInputError(f"Brain mask {run.mask.name} is empty", "some voxels inside the brain", "0 voxels",
                            "use the mask fMRIPrep wrote for this run")
    grid = (tuple(int(v) for v in img.shape[:3]), np.asarray(img.affine, dtype=np.float64))
    return int(img.shape[3]), n_points, grid


def _check_confounds(run: BoldRun, n_frames: int, settings: IngestSettings,
                     no_confounds: list[str]) -> RunConfounds:
    if run.confounds is None:
        if settings.on_missing_confounds == "error":
            raise BadInputError(f"No confounds table for run {run.key}",
                                f"{run.key}_desc-confounds_timeseries.tsv next to the BOLD files", "none",
                                "add it, or set ingest.on_missing_confounds=warn to clean without it")
        no_confounds.append(run.key)
        confounds = NO_CONFOUNDS
    else:
        confounds = load_run_confounds(run, settings)
        if confounds.n_rows != n_frames:
            raise BadInputError(f"Confounds table {run.confounds.name} does not match its run",
                                f"{n_frames} rows (one per frame)", f"{confounds.n_rows} rows",
                                "use the confounds table fMRIPrep wrote for this run")
    kept = confounds.n_kept(n_frames)
    if kept < settings.min_frames:
        raise BadInputError(f"Run {run.key} keeps too few frames", f"at least ingest.min_frames={settings.min_frames} "
                            "after removing non-steady-state and scrubbed frames", f"{kept} of {n_frames}",
                            "exclude the run, or relax ingest.fd_threshold / ingest.min_frames")
    return confounds


def check_on_grid(runs: list[BoldRun], space: SpaceInfo) -> None:
    """Volume runs must be on the trained voxel grid (cheap: headers only)."""
    for r in runs:
        try:
            img = nib.load(str(r.bold[0]))
        except Exception:  # unreadable files are reported by the ingest checks
            continue
        shape = tuple(int(v) for v in img.shape[:3])
        if shape != space.grid_shape or not np.allclose(img.affine, space.affine, atol=1e-3):
            raise BadInputError(f"Run {r.key} is on another voxel grid than the fit",
                                f"grid {space.grid_shape} of space-{space.space} as in the training runs",
                                f"grid {shape}" + (" with another affine" if shape == space.grid_shape else ""),
                                "resample the run to the training grid (the same fMRIPrep output space and resolution)")


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
        raise _corrupt(path, exc) from exc
    if not tail.rstrip().endswith(b"</GIFTI>") or not count:
        raise _corrupt(path, None)
    dims = {k.decode(): int(v) for k, v in re.findall(rb'\b(Dim\d|Dimensionality)="(\d+)"', first)}
    n_vertices = dims.get("Dim0", 0)
    if count == 1 and dims.get("Dimensionality", 1) == 2:
        return n_vertices, dims.get("Dim1", 0)
    return n_vertices, count


def _corrupt(path: Path, exc: BaseException | None) -> BadInputError:
    detail = "an unreadable or truncated file" if exc is None else f"{exc.__class__.__name__}: {exc}".splitlines()[0]
    return BadInputError(f"Cannot read {path}", "a complete GIFTI or NIfTI image", detail,
                         "re-run fMRIPrep for this run (or restore the file) or exclude the participant")


def _load_header(path: Path):
    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise _corrupt(path, exc) from exc


@functools.lru_cache(maxsize=4)
def _mesh(space: str):
    """The fsaverage pial mesh of a space, held in memory (nilearn compares meshes per call)."""
    from nilearn.datasets import load_fsaverage
    from nilearn.surface import InMemoryMesh, PolyMesh

    name = "fsaverage" if space == "fsaverage7" else space
    try:
        pial = load_fsaverage(name)["pial"]
    except Exception as exc:  # only fsaverage5 ships with nilearn; the others are downloaded
        raise BadInputError(f"Cannot load the {space} mesh", "nilearn's fsaverage meshes (fsaverage5 ships "
                            "with nilearn, the others are downloaded once)", exc.__class__.__name__,
                            "connect to the internet once, or resample the runs to fsaverage5") from exc
    return PolyMesh(**{h: InMemoryMesh(part.coordinates, part.faces) for h, part in pial.parts.items()})
