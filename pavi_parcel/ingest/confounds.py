"""Cleaning settings and fMRIPrep confounds, through ``nilearn.interfaces.fmriprep.load_confounds``.

:func:`load_run_confounds`
turns a run's confounds table into the regressors and the kept-frame index (non-steady-state
volumes and, with ``scrub``, high-motion frames removed) that the nilearn maskers take.

``load_confounds`` finds the table from the image names, which it expects in the newest
fMRIPrep spelling, next to the images, and alone of its kind. The table is therefore shown to
it in a private temporary folder under the canonical names (a link, or a copy where links are
not allowed), so older names (``_space-fsaverage5_hemi-L.func.gii``,
``_desc-confounds_regressors.tsv``) and folders holding both spellings work the same.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pavi_parcel.bids.discovery import BoldRun
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.settings.schema import IngestSettings


def confound_kwargs(settings: IngestSettings) -> dict[str, Any]:
    """Keyword arguments of ``nilearn.interfaces.fmriprep.load_confounds`` for these settings."""
    return {"strategy": [s for s in settings.strategy if s != "non_steady_state"],
            "motion": settings.motion, "wm_csf": settings.wm_csf, "global_signal": settings.global_signal,
            "compcor": settings.compcor, "n_compcor": settings.n_compcor, "scrub": int(settings.scrub),
            "fd_threshold": float(settings.fd_threshold),
            "std_dvars_threshold": float(settings.std_dvars_threshold), "demean": True}


def masker_kwargs(settings: IngestSettings, tr: float) -> dict[str, Any]:
    """Cleaning keyword arguments shared by nilearn's ``SurfaceMasker`` and ``NiftiMasker``."""
    return {"detrend": bool(settings.detrend), "standardize": settings.standardize or False,
            "high_pass": None if settings.high_pass is None else float(settings.high_pass),
            "low_pass": None if settings.low_pass is None else float(settings.low_pass),
            "t_r": float(tr),
            "clean_args": {"filter": settings.filter if (settings.high_pass or settings.low_pass) else False}}


@dataclass
class RunConfounds:
    """What cleaning needs from one run's confounds table.

    Attributes
    ----------
    regressors : DataFrame of shape (n_frames, n_regressors) or None
        Demeaned regressors; None without a confounds table or with an empty strategy.
    sample_mask : ndarray of shape (n_frames_kept,) or None
        Indices of the frames kept; None keeps every frame.
    n_rows : int or None
        Rows of the table (must equal the run's frames); None without a table.
    mean_fd : float
        Mean framewise displacement (mm) over the run; NaN when unavailable.
    """

    regressors: pd.DataFrame | None
    sample_mask: np.ndarray | None
    n_rows: int | None
    mean_fd: float

    def n_kept(self, n_frames: int) -> int:
        return n_frames if self.sample_mask is None else int(len(self.sample_mask))


NO_CONFOUNDS = RunConfounds(None, None, None, float("nan"))


def load_run_confounds(run: BoldRun, settings: IngestSettings) -> RunConfounds:
    """Select the run's regressors and kept frames as the settings ask.

    Raises
    ------
    BadInputError
        Unreadable table, columns the strategy needs but the table lacks, n/a values left.
    """
    if run.confounds is None:
        return NO_CONFOUNDS
    path = Path(run.confounds)
    try:
        raw = pd.read_csv(path, sep="\t")
    except Exception as exc:  # pandas raises several types for broken tables
        raise BadInputError(f"Cannot read the confounds table {path}", "a tab-separated fMRIPrep table",
                            exc.__class__.__name__, "re-run fMRIPrep for this run or remove the file") from exc
    fd = pd.to_numeric(raw["framewise_displacement"], errors="coerce") \
        if "framewise_displacement" in raw else pd.Series(dtype=float)
    mean_fd = float(np.nanmean(fd)) if fd.notna().any() else float("nan")
    kwargs = confound_kwargs(settings)
    with tempfile.TemporaryDirectory(prefix="pavi-confounds-") as tmp:
        images = _stage(run, path, Path(tmp))
        try:
            from nilearn.interfaces.fmriprep import load_confounds

            with warnings.catch_warnings():  # an empty strategy is allowed: frames are still selected
                warnings.filterwarnings("ignore", message="strategy is empty")
                warnings.filterwarnings("ignore", message="All volumes were marked as motion outliers")
                regressors, sample_mask = load_confounds(images, **kwargs)
        except (ValueError, KeyError) as exc:
            message = str(exc).replace("\n", " ").strip()
            missing = re.findall(r"'([^']+)'", message.split("missing", 1)[1]) if "missing" in message else []
            if missing:
                message = f"missing columns {', '.join(missing[:4])}" + \
                    (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            message = message[:200]
            raise BadInputError(f"Confounds table {path.name} does not fit ingest.strategy={list(settings.strategy)}",
                                "the columns that strategy needs (fMRIPrep >= 1.2 names)", message,
                                "choose a smaller strategy or model (e.g. ingest.motion=basic) or "
                                "re-run fMRIPrep") from exc
    if regressors is not None and regressors.shape[1] == 0:
        regressors = None
    if sample_mask is not None and len(sample_mask) < settings.min_frames:
        # too few frames left: the caller reports that, and the regressors of a run without
        # frames are not worth checking (nilearn leaves them undefined)
        return RunConfounds(None, np.asarray(sample_mask, dtype=int), len(raw), mean_fd)
    if regressors is not None and not np.isfinite(regressors.to_numpy(dtype=float)).all():
        bad = [c for c in regressors if not np.isfinite(regressors[c].to_numpy(dtype=float)).all()]
        raise BadInputError(f"Confounds table {path.name} has n/a or infinite values",
                            "finite values in every selected column (n/a only in row 1 of derivatives)",
                            f"non-finite values in {', '.join(bad[:5])}", "re-run fMRIPrep for this run")
    return RunConfounds(regressors, None if sample_mask is None else np.asarray(sample_mask),
                        len(raw), mean_fd)


def _stage(run: BoldRun, table: Path, folder: Path) -> str | list[str]:
    """Show the table to ``load_confounds`` under canonical names; return the image name(s)."""
    stem = run.key
    _link(table, folder / f"{stem}_desc-confounds_timeseries.tsv")
    sidecar = table.with_suffix(".json")
    if sidecar.is_file():
        _link(sidecar, folder / f"{stem}_desc-confounds_timeseries.json")
    names = [str(folder / name) for name in run.space.bold_names(stem)]
    return names if len(names) > 1 else names[0]


def _link(source: Path, target: Path) -> None:
    try:
        os.symlink(source.resolve(), target)
    except OSError:
        shutil.copyfile(source, target)
