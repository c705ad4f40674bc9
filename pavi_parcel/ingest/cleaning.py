"""Ingestion: mask and clean every BOLD run with nilearn, store it as ``work/timeseries/<run>.h5``.

Two passes. The first is cheap and runs in the main process (:mod:`pavi_parcel.ingest.runcheck`):
header checks (frames per hemisphere, 4-D images, masks on the run's grid, one grid for the
cohort, truncated GIFTIs), confounds tables (rows, columns, frames left after scrubbing);
every problem found is reported at once before any expensive work starts. The second loads,
masks and cleans the runs in parallel (joblib) and writes each file atomically; problems only
visible in the data (non-finite values, corrupt arrays) are collected and reported together at
the end, after the good runs are stored.

Cleaning is nilearn's, through the run's space (:meth:`pavi_parcel.spaces.Space.clean_run`):
``SurfaceMasker`` on the fsaverage mesh (surfaces) or ``NiftiMasker`` with fMRIPrep's brain
mask (volumes), fed the regressors and kept frames of
:func:`pavi_parcel.ingest.confounds.load_run_confounds`; detrending, the cosine (DCT) high-pass and
z-scoring happen in the same ``signal.clean`` call. Vertices (voxels) that are constant over
the kept frames, such as the medial wall, are left out and the kept ones recorded as
``vertex_index`` in the full space of the run's space.

A file is reused when its ``fingerprint`` attribute (hash of the input files' names, sizes
and modification times, the TR and the settings) matches; anything else is redone.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from pavi_parcel.bids.discovery import BoldRun
from pavi_parcel.exceptions import BadInputError, BadInputErrors, ResourceError
from pavi_parcel.settings.schema import IngestSettings
from pavi_parcel.spaces.base import NoValidPoints
from pavi_parcel.stores.timeseries import read_run_attrs, write_run_timeseries

from .confounds import masker_kwargs
from .runcheck import IngestPlan, Plan, plan_runs

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
    list of Path or None
        One entry per run, in the order of ``runs``: its file, or None for a run the quality
        screening excluded (:attr:`IngestPlan.stored`). Each file holds ``data`` of shape
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
    return plan.stored


# --------------------------------------------------------------------------- expensive pass
def _ingest_one(plan: Plan, settings: IngestSettings) -> tuple[bool, str, str, str, str] | None:
    """Load, mask, clean and store one run; returns a problem as plain strings (picklable)."""
    run = plan.run
    try:
        with warnings.catch_warnings():
            for message in _QUIET:
                warnings.filterwarnings("ignore", message=re.escape(message))
            cleaned, space_attrs = plan.space.clean_run(
                run.bold, run.mask, plan.n_frames, _kept(plan), plan.confounds.regressors,
                plan.confounds.sample_mask, masker_kwargs(settings, run.tr), run.key)
        write_run_timeseries(plan.path, cleaned.data, cleaned.vertex_index,
                             _attrs(plan, settings, cleaned.data, cleaned.tsnr, space_attrs))
    except NoValidPoints:  # stored empty: the quality gates exclude it, with the others' vertices intact
        empty = np.zeros((len(_kept(plan)), 0), dtype=np.float32)
        write_run_timeseries(plan.path, empty, np.zeros(0, dtype=np.int64),
                             _attrs(plan, settings, empty, float("nan"), plan.space.attrs()))
    except BadInputError as exc:
        return isinstance(exc, ResourceError), exc.what, exc.expected, exc.got, exc.fix
    return None


def _kept(plan: Plan) -> np.ndarray:
    mask = plan.confounds.sample_mask
    return np.arange(plan.n_frames) if mask is None else mask


def _attrs(plan: Plan, settings: IngestSettings, data: np.ndarray, tsnr: float,
           space_attrs: dict[str, Any]) -> dict[str, Any]:
    run, confounds = plan.run, plan.confounds
    columns = [] if confounds.regressors is None else [str(c) for c in confounds.regressors.columns]
    sources = [str(p) for p in (*run.bold, run.mask, run.confounds) if p is not None]
    return {
        "subject": run.subject, "session": run.session or "", "task": run.task, "run": run.run or "",
        "space": run.space.name, **space_attrs, "tr": float(run.tr), "n_frames_total": int(plan.n_frames),
        "n_frames_kept": int(data.shape[0]), "kept_frames": [int(i) for i in _kept(plan)],
        "mean_fd": float(confounds.mean_fd), "tsnr": float(tsnr), "source_files": sources,
        "strategy": {**settings.to_dict(), "confounds_table": run.confounds is not None,
                     "confound_columns": columns},
        "fingerprint": plan.fingerprint,
    }
