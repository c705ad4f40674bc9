"""Fingerprints of new subjects on a fitted run's vertices and seeds (for ``pavi-parcel apply``).

A fitted model only understands fingerprints over its own vertices (rows) and seeds
(columns), computed as for the training cohort (:mod:`pavi_parcel.fingerprints`: Pearson
correlation averaged over a session's runs, top fraction kept as ones, demeaned and
normalised on reading). A new subject's runs need not cover the same vertices as the training
runs did: a fitted vertex a session lacks gets an all-zero fingerprint (no evidence there; the
group prior decides), a seed it lacks is never among a vertex's top fraction (binarised) or gets
the row mean (continuous). A run covering less than half of the fitted vertices or seeds is
refused. When the training store is gone, the default seeds are rebuilt from the fitted
vertices (:func:`default_seeds`), exactly as the store had them. A fit on pseudo-sessions
(:mod:`.split`) splits a new subject's sessions the same way, so that its evidence comes in
the units the fit was calibrated on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.settings.schema import FingerprintSettings
from pavi_parcel.spaces import Space
from pavi_parcel.stores.fingerprints import FingerprintWriter
from pavi_parcel.stores.timeseries import read_run_attrs, read_run_timeseries

from .compute import (
    MIN_SHARED_FRACTION,
    SINGLE_SESSION,
    binarize_top_fraction,
    run_correlations,
    settings_digest,
    store_matches,
)
from .split import Segment, session_parts

log = logging.getLogger(__name__)

APPLY_FORMAT = 2  # bump when a new subject's fingerprint store changes for the same inputs


def default_seeds(vertex_index: np.ndarray, space: Space, settings: FingerprintSettings) -> np.ndarray:
    """The pipeline's default seeds of a cohort whose shared vertices are ``vertex_index``.

    Parameters
    ----------
    vertex_index : ndarray of int, shape (N,)
        Fitted vertices (voxels) in the full space.
    space : Space
    settings : FingerprintSettings
        ``seed_spacing_mm`` for volumes.

    Returns
    -------
    ndarray of int64, shape (D,)
    """
    return space.default_seeds(np.asarray(vertex_index), settings.seed_spacing_mm)


def subject_fingerprints(label: str, items: list[tuple[Path, Any]], work: Path, vertex_index: np.ndarray,
                         seeds: np.ndarray, space: Space, top_fraction: float, split: str = "none") -> Path:
    """One new subject's fingerprint store on fitted vertices and seeds (reused when unchanged).

    Parameters
    ----------
    label : str
        Participant label without ``sub-``.
    items : list of (Path, BoldRun)
        The subject's cleaned runs (``work/timeseries/<run>.h5``) and the runs they came from.
    work : Path
        Folder of the store (``OUT_DIR/work/apply``).
    vertex_index : ndarray of int, shape (N,)
    seeds : ndarray of int, shape (D,)
    space : Space
    top_fraction : float
        As the training store (0 = continuous).
    split : str
        The fit's split into pseudo-sessions (``none``, ``halves`` or ``runs``, :mod:`.split`).

    Returns
    -------
    Path
        ``work/sub-<label>_fingerprints.h5``: one subject, its sessions, ``vertex_index`` and
        ``seed_index`` of the fit.
    """


    sessions: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, r in items:
        attrs = read_run_attrs(path) or {}
        if int(attrs.get("n_total", -1)) != space.n_total:
            raise BadInputError(f"Run {r.key} does not match the space of the fit",
                                f"{space.n_total} points of space-{space.name}", f"{attrs.get('n_total')} points",
                                "apply the model to runs in the space it was fitted on")
        sessions.setdefault(r.session or SINGLE_SESSION, []).append((path, attrs))
    parts = _split_sessions(label, sessions, split)
    names = sorted(parts)
    settings = {"apply_format": APPLY_FORMAT, "top_fraction": float(top_fraction), "split": split,
                "geometry": settings_digest({"v": np.asarray(vertex_index).tolist(), "s": np.asarray(seeds).tolist()}),
                "runs": sorted(str(attrs.get("fingerprint")) for runs in sessions.values() for _, attrs in runs)}
    target = Path(work) / f"sub-{label}_fingerprints.h5"
    if store_matches(target, settings):
        return target
    for path, _ in items:
        _check_coverage(path, vertex_index, seeds, label)
    writer = FingerprintWriter(target, [label], names, np.ones((1, len(names)), dtype=bool), vertex_index, seeds,
                               space, top_fraction, settings)
    try:
        for j, t in enumerate(names):
            if writer.is_done(0, j):
                continue
            corr, present = session_correlations(parts[t], vertex_index, seeds)
            if top_fraction > 0:  # a missing seed is never among the top fraction
                entry = binarize_top_fraction(np.nan_to_num(corr, nan=-np.inf), top_fraction)
            else:  # continuous: a missing seed gets the row mean, neutral once demeaned
                entry = np.where(np.isnan(corr), np.nanmean(corr, axis=1, keepdims=True), corr)
            entry[~present] = 0
            writer.write(0, j, entry)
        return writer.finish()
    except BaseException:
        writer.close()  # keep the partial store for a resume
        raise


def _split_sessions(label: str, sessions: dict[str, list[tuple[Path, dict[str, Any]]]],
                    split: str) -> dict[str, list[Segment]]:
    """A new subject's (pseudo-)sessions under the fit's split; a session too short to split stays whole."""
    parts: dict[str, list[Segment]] = {}
    for session, runs in sessions.items():
        try:
            parts.update(session_parts(split, session, runs))
        except BadInputError as exc:
            log.warning("sub-%s session %s fingerprinted whole, not split as the fit's (%s)", label, session, exc.got)
            parts.update(session_parts("none", session, runs))
    return parts


def session_correlations(segments: list[Segment], vertex_index: np.ndarray,
                         seeds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlation of fitted vertices with fitted seeds, averaged over one (pseudo-)session's runs.

    Parameters
    ----------
    segments : list of Segment
        The session's cleaned runs (and the frames of each to use).
    vertex_index : ndarray of int, shape (N,)
    seeds : ndarray of int, shape (D,)

    Returns
    -------
    corr : ndarray of float32, shape (N, D)
        NaN in the columns of seeds some run lacks.
    present : ndarray of bool, shape (N,)
        The fitted vertices every run of the session covers.
    """


    total = np.zeros((len(vertex_index), len(seeds)), dtype=np.float32)
    present, seed_ok = np.ones(len(vertex_index), bool), np.ones(len(seeds), bool)
    for segment in segments:
        ts = read_run_timeseries(segment.path)
        cols, has = _columns(ts.vertex_index, vertex_index)
        seed_cols, has_seed = _columns(ts.vertex_index, seeds)
        total += run_correlations(ts.data if segment.rows is None else ts.data[segment.rows], cols, seed_cols)
        present &= has
        seed_ok &= has_seed
    corr = total / len(segments)
    corr[:, ~seed_ok] = np.nan
    return corr, present


def _check_coverage(path: Path, vertex_index: np.ndarray, seeds: np.ndarray, label: str) -> None:
    """Refuse a run that covers less than half of the fitted vertices or seeds."""

    with h5py.File(path, "r") as h5:
        available = h5["vertex_index"][()]
    for what, wanted in (("vertices", vertex_index), ("seeds", seeds)):
        n = int(np.isin(wanted, available).sum())
        if n < MIN_SHARED_FRACTION * len(wanted):
            raise BadInputError(f"Run {path.stem} of sub-{label} covers too few of the fitted {what}",
                                f"at least {MIN_SHARED_FRACTION:.0%} of {len(wanted)}", str(n),
                                "check this run's coverage or leave the participant out")


def _columns(available: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``wanted`` in the sorted ``available`` (0 where absent) and a presence mask."""
    pos = np.clip(np.searchsorted(available, wanted), 0, max(available.size - 1, 0))
    has = available[pos] == wanted if available.size else np.zeros(len(wanted), bool)
    return np.where(has, pos, 0), has
