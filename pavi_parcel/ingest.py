"""Ingestion: mask and clean every BOLD run with nilearn, store it as ``work/timeseries/<run>.h5``.

Two passes. The first is cheap and runs in the main process: header checks (frames per
hemisphere, 4-D images, masks on the run's grid, truncated GIFTIs), confounds tables (rows,
columns, frames left after scrubbing); every problem found is reported at once before any
expensive work starts. The second loads, masks and cleans the runs in parallel (joblib) and
writes each file atomically; problems only visible in the data (non-finite values, corrupt
arrays) are collected and reported together at the end, after the good runs are stored.

Cleaning is nilearn's: ``SurfaceMasker`` on the fsaverage mesh (surfaces) or ``NiftiMasker``
with fMRIPrep's brain mask (volumes), fed the regressors and kept frames of
:func:`pavi_parcel.confounds.load_run_confounds`; detrending, the cosine (DCT) high-pass and
z-scoring happen in the same ``signal.clean`` call. Vertices (voxels) that are constant over
the kept frames, such as the medial wall, are left out and the kept ones recorded as
``vertex_index`` in the full space (fsaverage: left 0..V-1 then right V..2V-1; volumes: flat
C-order grid index).

A file is reused when its ``fingerprint`` attribute (hash of the input files' names, sizes
and modification times, the TR and the settings) matches; anything else is redone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from .bids import BoldRun
from .confounds import NO_CONFOUNDS, IngestSettings, RunConfounds, load_run_confounds
from .exceptions import BadInputError, BadInputErrors, ResourceError
from .store import read_run_attrs, write_run_timeseries

INGEST_FORMAT = 1  # bump when the stored content changes for the same inputs and settings
MESH_VERTICES = {"fsaverage3": 642, "fsaverage4": 2562, "fsaverage5": 10242, "fsaverage6": 40962,
                 "fsaverage7": 163842, "fsaverage": 163842}
_QUIET = ("Cosine filter(s) exist in user supplied confounds",)


@dataclass
class _Plan:
    """A validated run, ready for the expensive pass."""

    index: int
    run: BoldRun
    path: Path
    fingerprint: str
    n_frames: int
    confounds: RunConfounds


def ingest_runs(runs: Sequence[BoldRun], work_dir: Path, cfg: Mapping[str, Any] | None,
                n_jobs: int = 1) -> list[Path]:
    """Clean every run and store it; reuse runs whose inputs and settings did not change.

    Parameters
    ----------
    runs : sequence of BoldRun
        From :func:`pavi_parcel.bids.find_runs`.
    work_dir : Path
        Files go to ``work_dir/timeseries/<run.key>.h5``.
    cfg : mapping or DictConfig
        The ``ingest`` config group (see :class:`pavi_parcel.confounds.IngestSettings`).
    n_jobs : int
        Parallel workers (joblib); -1 for every core.

    Returns
    -------
    list of Path
        One file per run, in the order of ``runs``. Each holds ``data`` of shape
        (n_frames_kept, n_valid), float32, and ``vertex_index`` of shape (n_valid,).

    Raises
    ------
    BadInputErrors
        Every input problem found, in one message; nothing half-written is left behind.
    """
    settings = IngestSettings.from_config(cfg)
    runs = list(runs)
    _check_unique_keys(runs)
    folder = Path(work_dir) / "timeseries"
    paths = [folder / f"{run.key}.h5" for run in runs]
    todo = []
    for i, (run, path) in enumerate(zip(runs, paths)):
        fingerprint = run_fingerprint(run, settings)
        if (read_run_attrs(path) or {}).get("fingerprint") != fingerprint:
            todo.append((i, run, path, fingerprint))
    plans = _validate(todo, settings)
    errors: list[BadInputError] = []
    if plans:
        jobs = (delayed(_ingest_one)(plan, settings) for plan in plans)
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)
        for problem in tqdm(results, total=len(plans), desc="ingest", unit="run"):
            if problem is not None:
                errors.append((ResourceError if problem[0] else BadInputError)(*problem[1:]))
    if errors:
        raise BadInputErrors(errors)
    return paths


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
def _validate(todo: list[tuple[int, BoldRun, Path, str]], settings: IngestSettings) -> list[_Plan]:
    plans, errors, no_confounds = [], [], []
    for space in sorted({run.space for _, run, _, _ in todo if run.is_surface}):
        try:
            _mesh(space)  # once per space: a missing mesh is one problem, not one per run
        except BadInputError as exc:
            raise BadInputErrors([exc]) from exc
    for index, run, path, fingerprint in todo:
        try:
            n_frames = _check_headers(run)
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
    return plans


def _check_headers(run: BoldRun) -> int:
    """Frames of the run from headers; raises for layouts the expensive pass would choke on."""
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
        if problems:
            raise BadInputErrors(problems)
        return shapes[0][1]
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
    return int(img.shape[3])


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
    import nibabel as nib

    try:
        return nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise _corrupt(path, exc) from exc


# --------------------------------------------------------------------------- expensive pass
def _ingest_one(plan: _Plan, settings: IngestSettings) -> tuple[bool, str, str, str, str] | None:
    """Load, mask, clean and store one run; returns a problem as plain strings (picklable)."""
    try:
        with warnings.catch_warnings():
            for message in _QUIET:
                warnings.filterwarnings("ignore", message=re.escape(message))
            if plan.run.is_surface:
                data, vertex_index, space_attrs = _clean_surface(plan, settings)
            else:
                data, vertex_index, space_attrs = _clean_volume(plan, settings)
        write_run_timeseries(plan.path, data, vertex_index, _attrs(plan, settings, data, space_attrs))
    except BadInputError as exc:
        return isinstance(exc, ResourceError), exc.what, exc.expected, exc.got, exc.fix
    return None


def _kept(plan: _Plan) -> np.ndarray:
    mask = plan.confounds.sample_mask
    return np.arange(plan.n_frames) if mask is None else mask


def _clean_surface(plan: _Plan, settings: IngestSettings):
    import nibabel as nib
    from nilearn.maskers import SurfaceMasker
    from nilearn.surface import SurfaceImage

    run = plan.run
    hemis = []
    for path in run.bold:
        try:
            hemi = np.asarray(nib.load(str(path)).agg_data(), dtype=np.float32)
        except Exception as exc:  # nibabel raises many types for corrupt arrays
            raise _corrupt(path, exc) from exc
        hemi = hemi.reshape(hemi.shape[0], -1)
        if hemi.shape[1] != plan.n_frames:
            raise BadInputError(f"{path.name} has {hemi.shape[1]} frames", f"{plan.n_frames} frames as its header",
                                f"{hemi.shape[1]}", "re-run fMRIPrep for this run")
        _check_finite(hemi, path)
        hemis.append(hemi)
    kept = _kept(plan)
    valid = [np.ptp(h[:, kept], axis=1) > 0 for h in hemis]
    _check_some_valid(valid, run)
    mesh = _mesh(run.space)
    img = SurfaceImage(mesh, {"left": hemis[0], "right": hemis[1]})
    mask = SurfaceImage(mesh, {"left": valid[0], "right": valid[1]})
    masker = SurfaceMasker(mask_img=mask, **settings.masker_kwargs(run.tr)).fit()
    data = masker.transform(img, confounds=plan.confounds.regressors, sample_mask=plan.confounds.sample_mask)
    n = hemis[0].shape[0]
    vertex_index = np.concatenate([np.flatnonzero(valid[0]), n + np.flatnonzero(valid[1])])
    return np.asarray(data, dtype=np.float32), vertex_index, {"n_total": 2 * n}


def _clean_volume(plan: _Plan, settings: IngestSettings):
    import nibabel as nib
    from nilearn.maskers import NiftiMasker

    run = plan.run
    try:
        img = nib.load(str(run.bold[0]))
        data = img.get_fdata(dtype=np.float32)
        brain = np.asarray(nib.load(str(run.mask)).dataobj).reshape(img.shape[:3]) > 0
    except BadInputError:
        raise
    except Exception as exc:  # nibabel raises many types for truncated or corrupt files
        raise _corrupt(run.bold[0], exc) from exc
    inside = data[brain]
    _check_finite(inside, run.bold[0])
    valid = brain.copy()
    valid[brain] = np.ptp(inside[:, _kept(plan)], axis=1) > 0
    del inside
    _check_some_valid([valid], run)
    # Hand the masker the mask's bounding box only: C order within the box is C order in the
    # grid, so the columns still follow np.flatnonzero(valid), with less memory and time.
    corner = np.array([np.flatnonzero(valid.any(axis=tuple(a for a in range(3) if a != d)))[[0, -1]]
                       for d in range(3)])
    box = tuple(slice(lo, hi + 1) for lo, hi in corner)
    box_affine = img.affine @ np.r_[np.c_[np.eye(3), corner[:, 0]], [[0, 0, 0, 1]]]
    boxed = np.ascontiguousarray(data[box])
    del data
    masker = NiftiMasker(mask_img=nib.Nifti1Image(valid[box].astype(np.uint8), box_affine),
                         **settings.masker_kwargs(run.tr)).fit()
    cleaned = masker.transform(nib.Nifti1Image(boxed, box_affine), confounds=plan.confounds.regressors,
                               sample_mask=plan.confounds.sample_mask)
    shape = tuple(int(s) for s in img.shape[:3])
    space = {"n_total": int(np.prod(shape)), "grid_shape": np.asarray(shape, dtype=np.int64),
             "affine": np.asarray(img.affine, dtype=np.float64)}
    return np.asarray(cleaned, dtype=np.float32), np.flatnonzero(valid.ravel(order="C")), space


def _check_finite(values: np.ndarray, path: Path) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        raise BadInputError(f"{path.name} has NaN or infinite values", "finite values in every frame",
                            f"{bad} non-finite values", "re-run fMRIPrep for this run or exclude the participant")


def _check_some_valid(valid: list[np.ndarray], run: BoldRun) -> None:
    if not any(v.any() for v in valid):
        raise BadInputError(f"Run {run.key} has no usable vertices", "vertices whose signal varies over time",
                            "constant signal everywhere", "check the BOLD files of this run")


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


def _attrs(plan: _Plan, settings: IngestSettings, data: np.ndarray, space_attrs: dict[str, Any]) -> dict[str, Any]:
    run, confounds = plan.run, plan.confounds
    columns = [] if confounds.regressors is None else [str(c) for c in confounds.regressors.columns]
    sources = [str(p) for p in (*run.bold, run.mask, run.confounds) if p is not None]
    return {
        "subject": run.subject, "session": run.session or "", "task": run.task, "run": run.run or "",
        "space": run.space, **space_attrs, "tr": float(run.tr), "n_frames_total": int(plan.n_frames),
        "n_frames_kept": int(data.shape[0]), "kept_frames": [int(i) for i in _kept(plan)],
        "mean_fd": float(confounds.mean_fd), "source_files": sources,
        "strategy": {**settings.to_dict(), "confounds_table": run.confounds is not None,
                     "confound_columns": columns},
        "fingerprint": plan.fingerprint,
    }
