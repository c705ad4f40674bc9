"""The cheap pass of ingestion: every run's headers, grid and confounds, checked before any data is read.

:func:`plan_runs` looks at what is cheap to read (GIFTI tags, NIfTI headers, brain masks,
confounds tables) for every run whose stored time series is missing or out of date, and
reports every problem at once (:class:`~pavi_parcel.exceptions.BadInputErrors`) before the
expensive pass of :mod:`pavi_parcel.ingest` loads, masks and cleans the data. The pipeline
runs it in its validation pass, so that nothing is written when an input is broken.

Checks: frames and vertices per hemisphere, single-frame GIFTIs, 4-D volumes, masks on the
run's grid and not empty, one voxel grid for the whole cohort, truncated or unreadable images,
confounds tables (rows, columns, n/a values); the frames and motion gates of :mod:`.quality`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np

from pavi_parcel.bids.discovery import BoldRun
from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.settings.schema import IngestSettings, QCSettings
from pavi_parcel.spaces import RunHeader, Space, space_from_attrs
from pavi_parcel.stores.timeseries import read_run_attrs

from .confounds import NO_CONFOUNDS, RunConfounds, load_run_confounds
from .quality import RunQuality, cohort_quality, screen_run

INGEST_FORMAT = 2  # bump when the stored content changes for the same inputs and settings


@dataclass
class Plan:
    """A validated run, ready for the expensive pass."""

    index: int
    run: BoldRun
    path: Path
    fingerprint: str
    n_frames: int
    confounds: RunConfounds
    space: Space


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
    space : Space
        The space of the cohort's runs (a volume space carries their one grid).
    quality : list of RunQuality
        The frames and motion gates of every run, in the order of the runs
        (:func:`pavi_parcel.ingest.quality.screen_run`): runs failing one are not in ``todo``.
    """

    paths: list[Path]
    todo: list[Plan]
    n_points: int
    frames: list[int]
    space: Space
    quality: list[RunQuality]

    @property
    def stored(self) -> list[Path | None]:
        """The stored time series of every run that passed the screening, None for the others."""
        return [p if q.included else None for p, q in zip(self.paths, self.quality)]


def plan_runs(runs: Sequence[BoldRun], work_dir: Path, settings: IngestSettings,
              qc: QCSettings | None = None) -> IngestPlan:
    """Check every run cheaply (headers, grids, confounds) and screen it, without writing anything.

    Parameters
    ----------
    runs : sequence of BoldRun
    work_dir : Path
    settings : IngestSettings
        Cleaning settings (``ingest.*``): they enter each run's fingerprint.
    qc : QCSettings or None
        The quality gates (``qc.*``); None for the defaults.

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
    qc = qc or QCSettings()
    plans, headers, quality = _validate(todo, settings, qc)
    for i, run, path in done:
        headers[i] = _stored_header(path)
        attrs = read_run_attrs(path) or {}
        quality[i] = screen_run(run, headers[i].n_frames, int(attrs.get("n_frames_kept", 0)),
                                float(attrs.get("mean_fd", float("nan"))), settings, qc)
    _check_one_grid(runs, headers)
    if quality:
        cohort_quality([quality[i] for i in sorted(quality)], [None] * len(quality))  # raises when none is left
    n_points = min((h.n_points for i, h in headers.items() if quality[i].included), default=0)
    return IngestPlan(paths, plans, int(n_points), [headers[i].n_frames for i in range(len(runs))],
                      headers[0].space if headers else runs[0].space, [quality[i] for i in range(len(runs))])


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
    blob = json.dumps({"format": INGEST_FORMAT, "files": stamp, "tr": run.tr, "space": run.space.name,
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
def _validate(todo: list[tuple[int, BoldRun, Path, str]], settings: IngestSettings,
              qc: QCSettings) -> tuple[list[Plan], dict[int, RunHeader], dict[int, RunQuality]]:
    plans, errors, no_confounds, headers, quality = [], [], [], {}, {}
    for index, run, path, fingerprint in todo:
        try:
            header = _check_headers(run)
            headers[index] = header
            confounds = _check_confounds(run, header.n_frames, settings, no_confounds)
            quality[index] = screen_run(run, header.n_frames, confounds.n_kept(header.n_frames), confounds.mean_fd,
                                        settings, qc)
            if quality[index].included:  # a run failing the frames or motion gate is never cleaned
                plans.append(Plan(index, run, path, fingerprint, header.n_frames, confounds, header.space))
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
    return plans, headers, quality


def _stored_header(path: Path) -> RunHeader:
    """Frames, valid points and space of a run already in the store."""
    attrs = read_run_attrs(path) or {}
    with h5py.File(path, "r") as h5:
        n_valid = int(h5["vertex_index"].shape[0])
    return RunHeader(int(attrs.get("n_frames_total", 0)), n_valid, space_from_attrs(attrs))


def _check_one_grid(runs: list[BoldRun], headers: dict[int, RunHeader]) -> None:
    """Volume runs must share one voxel grid: fingerprints compare voxels across the cohort."""
    grids: dict[tuple, list[str]] = {}
    for i, header in sorted(headers.items()):
        space = header.space
        if space.grid_shape is not None:
            grids.setdefault((space.grid_shape, tuple(np.round(space.affine, 3).ravel())), []).append(runs[i].key)
    if len(grids) > 1:
        listing = "; ".join(f"shape {shape} voxel {abs(aff[0]):g} mm in {len(keys)} run(s) (e.g. {keys[0]})"
                            for (shape, aff), keys in grids.items())
        raise BadInputErrors([BadInputError(
            "Runs are on different voxel grids", "one grid (shape and affine) for the whole cohort",
            listing, "pick one resolution with data.space=NAME:res-2, or resample the runs to one grid")])


def _check_headers(run: BoldRun) -> RunHeader:
    """Frames, candidate points and concrete space of the run from its headers (the run's space checks them)."""
    return run.space.scan_run(run.bold, run.mask, run.key)


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
    return confounds  # too few frames kept is a quality gate (:func:`.quality.screen_run`), not an input error


def check_on_grid(runs: list[BoldRun], space: Space) -> None:
    """Runs must be on the voxel grid of a fitted volume space (cheap: headers only; nothing to check on meshes)."""
    if space.grid_shape is None:
        return
    for r in runs:
        try:
            img = nib.load(str(r.bold[0]))
        except Exception:  # unreadable files are reported by the ingest checks
            continue
        shape = tuple(int(v) for v in img.shape[:3])
        if shape != space.grid_shape or not np.allclose(img.affine, space.affine, atol=1e-3):
            raise BadInputError(f"Run {r.key} is on another voxel grid than the fit",
                                f"grid {space.grid_shape} of space-{space.name} as in the training runs",
                                f"grid {shape}" + (" with another affine" if shape == space.grid_shape else ""),
                                "resample the run to the training grid (the same fMRIPrep output space and resolution)")
