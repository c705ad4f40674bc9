"""Pseudo-sessions: one session fingerprinted as two independent halves, for calibration.

The label calibration (:func:`pavi_parcel.inference.calibration.calibrate_labels`) and the
choice of the Potts strength compare a subject's sessions; a cohort with one session per
subject (the commonest public design) has nothing to compare. Such a session is then
fingerprinted as two *pseudo-sessions*, as independent as the data allow:

* ``runs``: a session with two runs or more is split into its alternate runs (1st, 3rd, ...
  against 2nd, 4th, ...), two sets of separate acquisitions; a session with one run is split
  in time as below.
* ``halves``: every run is cut in two at the middle of its kept frames (in acquisition time,
  ``kept_frames``), and the frames within :data:`GAP_SECONDS` of the cut are dropped on both
  sides. BOLD noise is autocorrelated over a few seconds (the haemodynamic response lasts
  about 10 s, and a 0.1 Hz low-pass smooths it over about 5 s): without a gap, the frames on
  either side of the cut would share noise and the two halves would look more consistent
  than two sessions are. Ten seconds on each side (5 frames at TR 2 s, 14 at TR 0.72 s) keeps
  20 s between the halves and costs under 3 % of a 12-minute run.

``auto`` (the default) splits only when fewer than two subjects have two real sessions, the
case where the calibration has nothing else to measure; ``none`` never splits. A
pseudo-session is named after its session with a suffix, ``1.a`` and ``1.b`` (a dot cannot
occur in a BIDS label, so :func:`real_session` recovers the session).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.settings.schema import SESSION_SPLITS as SPLITS

log = logging.getLogger(__name__)

GAP_SECONDS = 10.0  # dropped on each side of a cut in time (noise autocorrelation; see the module doc)
MIN_PART_FRAMES = 10  # frames a pseudo-session needs from a run for a correlation worth the name
PARTS = ("a", "b")
SEPARATOR = "."  # not allowed in a BIDS label: pseudo-session names never clash with real ones


@dataclass(frozen=True)
class Segment:
    """Frames of one stored run that enter one (pseudo-)session.

    Attributes
    ----------
    path : Path
        ``work/timeseries/<run>.h5``.
    rows : ndarray of int, shape (n_rows,), or None
        Rows of the run's stored data (its kept frames) to use; None for all.
    """

    path: Path
    rows: np.ndarray | None = None


def pseudo_session(session: str, part: int) -> str:
    """Name of part ``part`` (0 or 1) of ``session``: ``'1'`` -> ``'1.a'``, ``'1.b'``."""
    return f"{session}{SEPARATOR}{PARTS[part]}"


def real_session(label: str) -> str:
    """The session a (pseudo-)session label belongs to: ``'1.a'`` -> ``'1'``, ``'2'`` -> ``'2'``."""
    return str(label).split(SEPARATOR, 1)[0]


def is_split(sessions: Sequence[str]) -> bool:
    """Whether session labels are pseudo-sessions (a split store)."""
    return any(SEPARATOR in str(s) for s in sessions)


def gap_frames(tr: float) -> int:
    """Frames dropped on each side of a cut in time: ``ceil(GAP_SECONDS / tr)``."""
    return int(math.ceil(GAP_SECONDS / float(tr) - 1e-9))


def halves(kept_frames: np.ndarray, tr: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a run's kept frames in its first and second half, the frames near the cut left out.

    Parameters
    ----------
    kept_frames : ndarray of int, shape (n_kept,)
        Acquisition index of every stored row (increasing; scrubbed frames are absent).
    tr : float
        Repetition time in seconds.

    Returns
    -------
    first, second : ndarray of int
        Rows (positions in ``kept_frames``) acquired before ``cut - gap`` and from ``cut + gap``
        on, where ``cut`` is the acquisition index of the middle kept frame and ``gap`` is
        :func:`gap_frames`; both halves hold (nearly) the same number of frames.
    """
    kept = np.asarray(kept_frames, dtype=np.int64)
    if kept.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    gap, cut = gap_frames(tr), int(kept[kept.size // 2])
    return np.flatnonzero(kept < cut - gap), np.flatnonzero(kept >= cut + gap)


def resolve_split(split: str, entries: Mapping[tuple[str, str], list[Path]]) -> str:
    """The split a cohort gets: ``auto`` becomes ``runs`` for a single-session cohort, else ``none``.

    Parameters
    ----------
    split : str
        ``fingerprints.split``: one of :data:`SPLITS`.
    entries : mapping (subject, session) -> list of Path
        The runs of every subject-session (after the quality gates).

    Returns
    -------
    str
        ``none``, ``halves`` or ``runs``.
    """
    if split != "auto":
        return split
    sessions_per_subject = Counter(subject for subject, _ in entries)
    return "none" if sum(n >= 2 for n in sessions_per_subject.values()) >= 2 else "runs"


def split_session(split: str, runs: Sequence[tuple[Path, Mapping[str, Any]]]) -> list[list[Segment]]:
    """The (pseudo-)sessions of one subject-session under ``split``.

    Parameters
    ----------
    split : str
        ``none``, ``halves`` or ``runs`` (resolved, :func:`resolve_split`).
    runs : sequence of (Path, dict)
        The session's stored runs and their attributes (``tr``, ``kept_frames``, ``run``).

    Returns
    -------
    list of list of Segment
        One list (the whole session) for ``none``, two (parts ``a`` and ``b``) otherwise.

    Raises
    ------
    BadInputError
        A half of a run would keep fewer than :data:`MIN_PART_FRAMES` frames.
    """
    if split == "none":  # in the given order, as sessions were always fingerprinted
        return [[Segment(path) for path, _ in runs]]
    ordered = sorted(runs, key=lambda item: (str(item[1].get("run") or ""), str(item[0])))
    if split == "runs" and len(ordered) >= 2:
        return [[Segment(path) for path, _ in ordered[part::2]] for part in range(2)]
    parts: list[list[Segment]] = [[], []]
    for path, attrs in ordered:
        kept = attrs.get("kept_frames")
        kept = np.arange(int(attrs.get("n_frames_kept", 0))) if kept is None else np.asarray(kept)
        first, second = halves(kept, float(attrs.get("tr", 2.0)))
        if min(first.size, second.size) < MIN_PART_FRAMES:
            raise BadInputError(f"Run {path.stem} is too short to split into two halves in time",
                                f"at least {MIN_PART_FRAMES} frames in each half after a gap of "
                                f"{gap_frames(float(attrs.get('tr', 2.0)))} frames each side of the cut",
                                f"{first.size} and {second.size} frames",
                                "set fingerprints.split=none (the maps are then not calibrated)")
        parts[0].append(Segment(path, first))
        parts[1].append(Segment(path, second))
    return parts


def session_parts(split: str, session: str, runs: Sequence[tuple[Path, Mapping[str, Any]]]) -> dict[str, list[Segment]]:
    """The (pseudo-)sessions of one session under ``split``, by name.

    Returns
    -------
    dict str -> list of Segment
        ``{session: whole session}`` for ``none``, else ``{"<session>.a": ..., "<session>.b": ...}``
        (:func:`split_session`, whose ``BadInputError`` it passes on).
    """
    parts = split_session(split, runs)
    if split == "none":
        return {session: parts[0]}
    return {pseudo_session(session, k): segments for k, segments in enumerate(parts)}


def describe_split(split: str, entries: Mapping[tuple[str, str], list[Path]], tr: float) -> str:
    """One log line saying what a split did to the cohort's sessions."""
    if split == "none":
        return "Sessions fingerprinted whole: subjects with two sessions calibrate the maps"
    multi = sum(len(paths) >= 2 for paths in entries.values())
    how_halves = f"each run split into two halves in time (gap {gap_frames(tr)} frames each side of the cut)"
    if split == "halves" or multi == 0:
        how = how_halves
    elif multi == len(entries):
        how = "each session's runs split into two groups (alternate runs)"
    else:
        how = f"sessions with two runs or more split into alternate runs, the others {how_halves}"
    lead = "One session per subject" if split == "runs" else f"fingerprints.split={split}"
    return f"{lead}: {how} to calibrate the maps"


__all__ = ["GAP_SECONDS", "SPLITS", "Segment", "describe_split", "gap_frames", "halves", "is_split",
           "pseudo_session", "real_session", "resolve_split", "session_parts", "split_session"]
