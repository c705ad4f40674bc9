"""Ingestion: mask and clean every BOLD run with nilearn, store it as ``work/timeseries/<run>.h5``.

Two passes. The first is cheap and runs in the main process (:mod:`pavi_parcel.ingest.runcheck`):
header checks (frames per hemisphere, 4-D images, masks on the run's grid, one grid for the
cohort, truncated GIFTIs), confounds tables (rows, columns, frames left after scrubbing);
every problem found is reported at once before any expensive work starts. The second loads, masks and cleans the runs in parallel (joblib) and
writes each file atomically; problems only visible in the data (non-finite values, corrupt
arrays) are collected and reported together at the end, after the good runs are stored.

Cleaning is nilearn's: ``SurfaceMasker`` on the fsaverage mesh (surfaces) or ``NiftiMasker``
with fMRIPrep's brain mask (volumes), fed the regressors and kept frames of
:func:`pavi_parcel.ingest.confounds.load_run_confounds`; detrending, the cosine (DCT) high-pass and
z-scoring happen in the same ``signal.clean`` call. Vertices (voxels) that are constant over
the kept frames, such as the medial wall, are left out and the kept ones recorded as
``vertex_index`` in the full space (fsaverage: left 0..V-1 then right V..2V-1; volumes: flat
C-order grid index).

A file is reused when its ``fingerprint`` attribute (hash of the input files' names, sizes
and modification times, the TR and the settings) matches; anything else is redone.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from pavi_parcel.bids.discovery import BoldRun
from pavi_parcel.exceptions import BadInputError, BadInputErrors, ResourceError
from pavi_parcel.settings.schema import IngestSettings
from pavi_parcel.stores.timeseries import read_run_attrs, write_run_timeseries

from .confounds import masker_kwargs
from .runcheck import IngestPlan, _corrupt, _mesh, _Plan, plan_runs

_QUIET = ("Cosine filter(s) exist in user supplied confounds",)


def ingest_runs(runs: Sequence[BoldRun], work_dir: Path, settings: IngestSettings,
                n_jobs: int = 1, plan: IngestPlan | None = None) -> list[Path]:
    """Clean every run and store it; reuse runs whose inputs and settings did not change.

    Parameters
    ----------
    runs : sequence of BoldRun
        From :func:`pavi_parcel.bids.discovery.find_runs`.
    work_dir : Path
        Files go to ``work_dir/timeseries/<run.key>.h5``.
    settings : IngestSettings
        Cleaning settings (``ingest.*``).
    n_jobs : int
        Parallel workers (joblib); -1 for every core.
    plan : IngestPlan or None
        The result of :func:`plan_runs` for the same runs, when the caller validated them
        already; None validates here.

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
    if plan is None:
        plan = plan_runs(runs, work_dir, settings)
    # another job sharing the work folder may have stored some runs since the plan was made
    plans = [p for p in plan.todo if (read_run_attrs(p.path) or {}).get("fingerprint") != p.fingerprint]
    errors: list[BadInputError] = []
    if plans:
        jobs = (delayed(_ingest_one)(p, settings) for p in plans)
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)
        for problem in tqdm(results, total=len(plans), desc="ingest", unit="run"):
            if problem is not None:
                errors.append((ResourceError if problem[0] else BadInputError)(*problem[1:]))
    if errors:
        raise BadInputErrors(errors)
    return list(plan.paths)


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
    masker = SurfaceMasker(mask_img=mask, **masker_kwargs(settings, run.tr)).fit()
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
                         **masker_kwargs(settings, run.tr)).fit()
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
