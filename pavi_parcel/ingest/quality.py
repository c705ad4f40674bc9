"""Per-run quality gates: every run is measured, a run failing a gate is excluded and listed, never lost silently.

Measures (one row per run, ``OUT_DIR/qc/runs.tsv``, :func:`pavi_parcel.io.layout.qc_table_path`):

- ``frames_kept``: frames left after non-steady-state removal and scrubbing (gate ``ingest.min_frames``);
- ``mean_fd``: mean framewise displacement in mm from the confounds table (gate ``qc.max_mean_fd``);
- ``tsnr``: median temporal SNR of the raw signal (gate ``qc.min_tsnr``; n/a on demeaned inputs);
- ``valid_<part>`` and ``fraction_<part>``: vertices (voxels) with a varying signal in each
  hemisphere (``brain`` in volumes), and their ratio to the cohort's median run (gate
  ``qc.min_vertex_fraction``). A run with no valid vertex in a hemisphere is always excluded.

The frames and motion gates are applied in the cheap pass (:mod:`.runcheck`), so an excluded run
is never cleaned; the others once every run is stored (:func:`assess_runs`). A subject without a
run left is excluded. The cohort's vertices are then chosen from the runs that pass
(:mod:`pavi_parcel.fingerprints.compute`), so one bad run cannot shrink everybody's cortex.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from pavi_parcel.bids.run import BoldRun
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.settings.schema import IngestSettings, QCSettings
from pavi_parcel.spaces import Space

log = logging.getLogger(__name__)

COLUMNS = ("run", "subject", "session", "task", "run_label", "status", "reason", "frames_total", "frames_kept",
           "mean_fd", "tsnr")
DESCRIPTIONS = {
    "run": "Run name (sub, ses, task and run entities)",
    "subject": "Participant label", "session": "Session label (n/a without sessions)",
    "task": "Task label", "run_label": "Run entity (n/a without one)",
    "status": "included or excluded", "reason": "Why the run was excluded (n/a when included)",
    "frames_total": "Frames of the run", "frames_kept": "Frames left after non-steady-state removal and scrubbing",
    "mean_fd": "Mean framewise displacement (mm)", "tsnr": "Median temporal SNR of the raw signal",
}


@dataclass
class RunQuality:
    """The measures and the verdict of one run.

    Attributes
    ----------
    run : BoldRun
    frames_total, frames_kept : int
    mean_fd, tsnr : float
        NaN where not measured.
    valid : dict of str to int
        Valid points per hemisphere (``brain`` in volumes); empty for runs excluded before cleaning.
    fraction : dict of str to float
        ``valid`` over the cohort's median run, per hemisphere.
    reasons : list of str
        Failed gates; empty when the run is kept.
    """

    run: BoldRun
    frames_total: int
    frames_kept: int
    mean_fd: float
    tsnr: float = float("nan")
    valid: dict[str, int] = field(default_factory=dict)
    fraction: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def included(self) -> bool:
        return not self.reasons


@dataclass
class CohortQuality:
    """The verdict on a cohort's runs.

    Attributes
    ----------
    rows : list of RunQuality
        One per run, in the order of the runs.
    kept_paths : list of Path
        Stored time series of the included runs.
    excluded_subjects : list of str
        Subjects without an included run.
    """

    rows: list[RunQuality]
    kept_paths: list[Path]
    excluded_subjects: list[str]

    @property
    def excluded(self) -> list[RunQuality]:
        return [r for r in self.rows if not r.included]

    def summary(self) -> str:
        """One line: what was excluded and why (or that every run passed)."""
        bad = self.excluded
        if not bad:
            return f"QC: all {len(self.rows)} runs passed the quality gates"
        listing = "; ".join(f"{r.run.key} ({', '.join(r.reasons)})" for r in bad[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        subjects = (f", and {len(self.excluded_subjects)} subject(s) without a run left: "
                    + ", ".join(f"sub-{s}" for s in self.excluded_subjects)) if self.excluded_subjects else ""
        return f"QC: excluded {len(bad)} of {len(self.rows)} runs{subjects}: {listing}{more}"


# --------------------------------------------------------------------------- gates
def screen_run(run: BoldRun, frames_total: int, frames_kept: int, mean_fd: float, ingest: IngestSettings,
               qc: QCSettings) -> RunQuality:
    """The gates known from the confounds alone (frames kept, motion), applied before cleaning."""
    row = RunQuality(run, int(frames_total), int(frames_kept), float(mean_fd))
    if frames_kept < ingest.min_frames:
        row.reasons.append(f"{frames_kept} of {frames_total} frames kept after scrubbing, below "
                           f"ingest.min_frames={ingest.min_frames}")
    if math.isfinite(mean_fd) and mean_fd > qc.max_mean_fd:
        row.reasons.append(f"mean FD {mean_fd:.2f} mm above qc.max_mean_fd={qc.max_mean_fd:g}")
    return row


def assess_runs(rows: Sequence[RunQuality], paths: Sequence[Path | None], space: Space,
                qc: QCSettings) -> CohortQuality:
    """Measure the stored runs, apply the data gates, and decide the cohort.

    Parameters
    ----------
    rows : sequence of RunQuality
        From :func:`screen_run`, one per run.
    paths : sequence of Path or None
        The run's stored time series, None for runs excluded before cleaning.
    space : Space
        The cohort's space (its hemispheres).
    qc : QCSettings

    Returns
    -------
    CohortQuality

    Raises
    ------
    BadInputError
        No run passes, or ``qc.on_exclusion=error`` and some run fails.
    """
    rows = list(rows)
    stored = [r for r, p in zip(rows, paths) if p is not None and r.included]  # the median is of screened runs
    for row, path in zip(rows, paths):
        if path is not None:
            row.valid, row.tsnr = stored_measures(path, space)
    median = {part: float(np.median([r.valid[part] for r in stored])) for part in _part_names(space)} \
        if stored else {}
    for row in stored:
        for part, n in row.valid.items():
            row.fraction[part] = n / median[part] if median[part] > 0 else 1.0
            if n == 0:
                row.reasons.append(f"no valid vertex in {_part_label(part)}")
            elif row.fraction[part] < qc.min_vertex_fraction:
                row.reasons.append(f"{_part_label(part)}: {row.fraction[part]:.0%} of the usual valid vertices, "
                                   f"below qc.min_vertex_fraction={qc.min_vertex_fraction:g}")
        if qc.min_tsnr > 0 and math.isfinite(row.tsnr) and row.tsnr < qc.min_tsnr:
            row.reasons.append(f"tSNR {row.tsnr:.1f} below qc.min_tsnr={qc.min_tsnr:g}")
    result = cohort_quality(rows, paths)
    if result.excluded and qc.on_exclusion == "error":
        raise BadInputError(f"{len(result.excluded)} run(s) failed the quality gates",
                            "every run passing (qc.on_exclusion=error)", result.summary().removeprefix("QC: "),
                            "fix or drop those runs, or set qc.on_exclusion=exclude to fit without them")
    return result


def cohort_quality(rows: Sequence[RunQuality], paths: Sequence[Path | None]) -> CohortQuality:
    """The cohort the verdicts leave; raises when no run is left."""
    rows = list(rows)
    kept = [p for r, p in zip(rows, paths) if r.included and p is not None]
    alive = {r.run.subject for r in rows if r.included}
    result = CohortQuality(rows, kept, sorted({r.run.subject for r in rows} - alive))
    if not any(r.included for r in rows):
        raise BadInputError("No run passed the quality gates", "at least one usable run",
                            result.summary().removeprefix("QC: "),
                            "fix the runs, or relax the gates (ingest.min_frames, ingest.fd_threshold, qc.*)")
    return result


def stored_measures(path: Path, space: Space) -> tuple[dict[str, int], float]:
    """Valid points per hemisphere (``brain`` for volumes) and tSNR of a stored run, from one read of its file."""
    with h5py.File(path, "r") as h5:
        index, tsnr = h5["vertex_index"][()], float(h5.attrs.get("tsnr", float("nan")))
    if not space.hemispheres:
        return {"brain": int(index.size)}, tsnr
    return {h.label: int(((index >= h.start) & (index < h.stop)).sum()) for h in space.hemispheres}, tsnr


def _part_names(space: Space) -> list[str]:
    return [h.label for h in space.hemispheres] or ["brain"]


def _part_label(part: str) -> str:
    return {"L": "the left hemisphere", "R": "the right hemisphere", "brain": "the brain mask"}[part]


# --------------------------------------------------------------------------- table
def write_qc_table(result: CohortQuality, path: Path) -> Path:
    """Write the QC table (TSV, ``n/a`` for missing values) and its column dictionary (JSON), atomically."""
    parts = sorted({p for r in result.rows for p in r.valid}, key=["L", "R", "brain"].index)
    header = [*COLUMNS, *(f"valid_{p}" for p in parts), *(f"fraction_{p}" for p in parts)]
    lines = []
    for r in result.rows:
        run = r.run
        values = [run.key, run.subject, run.session, run.task, run.run, "included" if r.included else "excluded",
                  "; ".join(r.reasons), r.frames_total, r.frames_kept, _number(r.mean_fd, 3), _number(r.tsnr, 1),
                  *(r.valid.get(p) for p in parts), *(_number(r.fraction.get(p), 3) for p in parts)]
        lines.append(["n/a" if v in (None, "") else str(v) for v in values])
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lines)
    described = {**DESCRIPTIONS, **{f"valid_{p}": f"Vertices with a varying signal in {_part_label(p)}"
                                   for p in parts},
                 **{f"fraction_{p}": f"valid_{p} over the cohort's median run" for p in parts}}
    with atomic_write(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({c: {"Description": described[c]} for c in header}, indent=2) + "\n")
    return path


def _number(value: float | None, digits: int) -> str | None:
    return None if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


__all__ = ["CohortQuality", "RunQuality", "assess_runs", "cohort_quality", "screen_run", "stored_measures",
           "write_qc_table"]
