"""Connectivity fingerprints: correlation of every vertex with D seed time series.

For each subject and session, the Pearson correlation of every cortical vertex with the
seed time series is averaged over the session's runs, then each vertex keeps its top
10 % seeds as ones (Yeo et al. 2011), and the binary vector is demeaned and L2-normalised
when read back (:func:`pavi_parcel.stores.fingerprints.unpack_fingerprints`). Entries are computed one
subject-session at a time, so peak memory does not grow with the cohort.

Seeds are the space's default (:meth:`pavi_parcel.spaces.Space.default_seeds`): on fsaverage
meshes the fsaverage3 vertices (the first 642 of each hemisphere, by icosahedral nesting) that
are valid in every run, about 1,175 seeds; in volumes one seed per cube of ``seed_spacing_mm``
(default 12 mm) tiling the brain mask, about 1,000 seeds on a whole-brain MNI mask.

The cohort's vertices are those with data in at least half of the subject-sessions (of the runs
that passed the quality gates, :mod:`pavi_parcel.ingest.quality`), so a run that lost vertices
does not take them from everybody: a session's vertex is averaged over the runs that have it, and is missing (a zero
fingerprint, left out of the likelihood) in a session where none has it.

A cohort with one session per subject is fingerprinted as two pseudo-sessions per session
(``fingerprints.split``, :mod:`.split`), so that the calibration has two looks to compare.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm.auto import tqdm

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.settings.schema import FingerprintSettings
from pavi_parcel.spaces import Space, space_from_attrs
from pavi_parcel.stores.fingerprints import FingerprintWriter
from pavi_parcel.stores.timeseries import read_run_attrs, read_run_timeseries

from .split import GAP_SECONDS, Segment, describe_split, resolve_split, session_parts

log = logging.getLogger(__name__)

SINGLE_SESSION = "1"
MIN_SHARED_FRACTION = 0.5  # of the fitted vertices a new subject's runs must cover (apply)
MIN_SESSION_COVERAGE = 0.5  # of the subject-sessions a vertex needs data in to enter the cohort


# --------------------------------------------------------------------------- kernels
def binarize_top_fraction(corr: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the top ``fraction`` entries of every row as ones; bit-pack the result.

    Parameters
    ----------
    corr : ndarray of shape (n_vertices, n_seeds)
    fraction : float
        In (0, 1); ``round(fraction * n_seeds)`` ones per row (at least one; more only on exact ties).

    Returns
    -------
    ndarray of uint8, shape (n_vertices, ceil(n_seeds / 8))
    """
    n_seeds = corr.shape[1]
    n_ones = max(1, int(round(fraction * n_seeds)))
    # A threshold per row (linear-time selection) is three times faster than argpartition;
    # exact ties at the threshold can add ones, which the reader accounts for (it counts them).
    threshold = np.partition(corr, n_seeds - n_ones, axis=1)[:, n_seeds - n_ones, None]
    return np.packbits(corr >= threshold, axis=1)


def run_correlations(data: np.ndarray, vertex_columns: np.ndarray, seed_columns: np.ndarray) -> np.ndarray:
    """Pearson correlation of selected columns with seed columns of one run.

    Parameters
    ----------
    data : ndarray of shape (n_frames, n_valid)
    vertex_columns : ndarray of shape (n_vertices,)
        Columns of ``data`` to correlate (the cohort vertices).
    seed_columns : ndarray of shape (n_seeds,)

    Returns
    -------
    ndarray of float32, shape (n_vertices, n_seeds)
    """
    z = data - data.mean(axis=0, dtype=np.float64).astype(np.float32)
    norm = np.linalg.norm(z, axis=0)
    z /= np.where(norm > 0, norm, 1.0).astype(np.float32)
    return z[:, vertex_columns].T @ z[:, seed_columns]


# --------------------------------------------------------------------------- stage
def compute_fingerprints(timeseries_paths: Sequence[Path], store_path: Path,
                         settings: FingerprintSettings) -> Path:
    """Build (or reuse) the fingerprint store from cleaned time-series files.

    Parameters
    ----------
    timeseries_paths : sequence of Path
        ``work/timeseries/<run>.h5`` files written by :mod:`pavi_parcel.ingest`.
    store_path : Path
        Target ``fingerprints.h5``; reused when its settings match, resumed when a
        previous run was interrupted, rebuilt otherwise.
    settings : FingerprintSettings
        Seeds, seed spacing (volumes), the top fraction kept and the split into pseudo-sessions
        (``fingerprints.*``); the split applied is saved in the store's settings (``split``).

    Returns
    -------
    Path
        ``store_path``, complete.
    """
    runs = [(Path(p), read_run_attrs(Path(p))) for p in timeseries_paths]
    unreadable = [str(p) for p, attrs in runs if attrs is None]
    if unreadable:
        raise BadInputError("Cannot read cleaned time series", "files written by the ingest stage",
                            f"unreadable {unreadable[0]}", "delete the work folder and rerun")
    top_fraction = settings.top_fraction
    entries = _group_by_subject_session(runs)
    space, vertex_index, seed_index = _cohort_geometry(runs, entries, settings)
    split, parts = split_sessions(settings.split, entries, dict(runs))
    subjects = sorted({s for s, _ in parts})
    sessions = sorted({t for _, t in parts})
    session_mask = np.array([[(s, t) in parts for t in sessions] for s in subjects])
    provenance = {"top_fraction": top_fraction, "seeds": settings.seeds, "seed_spacing_mm": settings.seed_spacing_mm,
                  "runs": sorted(str(attrs.get("fingerprint")) for _, attrs in runs), "split": split}
    if split != "none":
        provenance["split_gap_s"] = GAP_SECONDS
    if store_matches(store_path, provenance):
        return store_path
    writer = FingerprintWriter(store_path, subjects, sessions, session_mask, vertex_index, seed_index,
                               space, top_fraction, provenance)
    try:
        todo = [(i, j) for i, s in enumerate(subjects) for j, t in enumerate(sessions)
                if (s, t) in parts and not writer.is_done(i, j)]
        for i, j in tqdm(todo, desc="fingerprints", unit="session", disable=not todo):
            corr = _session_correlations(parts[subjects[i], sessions[j]], vertex_index, seed_index)
            writer.write(i, j, binarize_top_fraction(corr, top_fraction) if top_fraction > 0 else corr)
        return writer.finish()
    except BaseException:
        writer.close()  # keep the partial store for a resume
        raise


def _cohort_geometry(runs, entries: Mapping[tuple[str, str], list[Path]],
                     settings: FingerprintSettings) -> tuple[Space, np.ndarray, np.ndarray]:
    """Space, the cohort's vertices and its seeds, from the runs that passed the quality gates.

    A vertex is in the cohort when at least ``MIN_SESSION_COVERAGE`` of the subject-sessions
    have data there (in any of their runs); where a run lacks it, that run is left out of the
    vertex's average for its session, and a session without any run there holds no fingerprint
    at the vertex, which the model treats as missing. Seeds must be valid in every run, since
    every vertex is correlated with them.
    """
    spaces = {(a["space"], int(a["n_total"])) for _, a in runs}
    if len(spaces) > 1:
        raise BadInputError("Runs come from different spaces", "one space for the whole cohort",
                            ", ".join(sorted(f"{s} ({n} points)" for s, n in spaces)),
                            "select one space with data.space")
    space = space_from_attrs(runs[0][1])
    in_runs = np.zeros(space.n_total, dtype=np.int32)
    in_sessions = np.zeros(space.n_total, dtype=np.int32)
    for paths in entries.values():
        session = np.zeros(space.n_total, dtype=bool)
        for path in paths:
            with h5py.File(path, "r") as h5:
                index = h5["vertex_index"][()]
            in_runs[index] += 1
            session[index] = True
        in_sessions += session
    vertex_index = np.flatnonzero(in_sessions >= MIN_SESSION_COVERAGE * len(entries)).astype(np.int64)
    seed_index = space.default_seeds(np.flatnonzero(in_runs == len(runs)), settings.seed_spacing_mm)
    if seed_index.size < 10:
        raise BadInputError("Too few fingerprint seeds", "at least 10 seeds valid in every run",
                            str(seed_index.size), "check the runs' masks or lower fingerprints.seed_spacing_mm")
    return space, vertex_index, seed_index


def split_sessions(split: str, entries: Mapping[tuple[str, str], list[Path]],
                   attrs: Mapping[Path, Mapping[str, Any]],
                   ) -> tuple[str, dict[tuple[str, str], list[Segment]]]:
    """The (pseudo-)sessions to fingerprint, under ``fingerprints.split`` (see :mod:`.split`).

    Parameters
    ----------
    split : str
        ``auto``, ``none``, ``halves`` or ``runs``.
    entries : mapping (subject, session) -> list of Path
        The runs of every subject-session.
    attrs : mapping Path -> dict
        Stored attributes of every run (``tr``, ``kept_frames``, ``run``).

    Returns
    -------
    split : str
        The split applied: ``none``, ``halves`` or ``runs``.
    parts : dict (subject, session label) -> list of Segment
        Real sessions under their own label (``none``), else two pseudo-sessions per session
        (``1.a``, ``1.b``).
    """
    def parts_under(kind: str) -> dict[tuple[str, str], list[Segment]]:
        return {(subject, name): segments for (subject, session), paths in entries.items()
                for name, segments in session_parts(kind, session, [(p, attrs[p]) for p in paths]).items()}

    resolved = resolve_split(split, entries)
    try:
        parts = parts_under(resolved)
    except BadInputError as exc:
        if split != "auto":
            raise
        log.warning("One session per subject, but %s: sessions fingerprinted whole, the maps are not "
                    "calibrated (%s)", exc.what[0].lower() + exc.what[1:], exc.got)
        return "none", parts_under("none")
    if split == "auto" or resolved != "none":
        log.info(describe_split(resolved, entries, float(next(iter(attrs.values())).get("tr", 2.0))))
    return resolved, parts


def _group_by_subject_session(runs) -> dict[tuple[str, str], list[Path]]:
    entries: dict[tuple[str, str], list[Path]] = defaultdict(list)
    for path, attrs in runs:
        entries[str(attrs["subject"]), str(attrs.get("session") or SINGLE_SESSION)].append(path)
    return dict(entries)


def _session_correlations(segments: Sequence[Segment], vertex_index: np.ndarray,
                          seed_index: np.ndarray) -> np.ndarray:
    """Correlation matrix averaged over one (pseudo-)session's runs, shape (n_vertices, n_seeds).

    Each vertex is averaged over the runs that have data there; rows of vertices no run has
    stay zero (missing: they binarise to a constant, zero-norm fingerprint). A segment with
    ``rows`` uses only those frames of its run (a half, :mod:`.split`).
    """
    total = np.zeros((vertex_index.size, seed_index.size), dtype=np.float32)
    count = np.zeros(vertex_index.size, dtype=np.int32)
    for segment in segments:
        run = read_run_timeseries(segment.path)
        data = run.data if segment.rows is None else run.data[segment.rows]
        columns, present = run.columns_of(vertex_index)
        corr = run_correlations(data, columns[present], np.searchsorted(run.vertex_index, seed_index))
        if present.all():
            total += corr
        else:
            total[present] += corr
        count += present
    total /= np.maximum(count, 1)[:, None].astype(np.float32)
    return total


def store_matches(store_path: Path, settings: dict[str, Any]) -> bool:
    if not store_path.exists():
        return False
    try:
        with h5py.File(store_path, "r") as h5:
            return h5.attrs.get("settings") == json.dumps(settings, sort_keys=True)
    except OSError:
        store_path.unlink()
        return False


def settings_digest(settings: Mapping[str, Any]) -> str:
    """Short stable hash of a settings mapping (for provenance and cache keys)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
