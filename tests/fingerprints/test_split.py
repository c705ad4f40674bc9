"""Pseudo-sessions of single-session cohorts: halves in time with a gap, alternate runs, names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.fingerprints.split import (
    gap_frames,
    halves,
    is_split,
    pseudo_session,
    real_session,
    resolve_split,
    split_session,
)


def test_halves_drop_the_frames_near_the_cut_and_are_balanced():
    kept = np.arange(300)
    first, second = halves(kept, tr=2.0)
    gap = gap_frames(2.0)
    assert gap == 5
    assert first.max() == 150 - gap - 1 and second.min() == 150 + gap   # 2 gaps = 20 s between the halves
    assert abs(first.size - second.size) <= 1
    assert np.intersect1d(first, second).size == 0


def test_halves_cut_in_acquisition_time_when_frames_were_scrubbed():
    kept = np.concatenate([np.arange(0, 100), np.arange(160, 300)])   # 60 frames censored early on
    first, second = halves(kept, tr=0.72)
    gap = gap_frames(0.72)
    assert gap == 14
    cut = kept[kept.size // 2]
    assert kept[first].max() < cut - gap + 1 and kept[second].min() >= cut + gap
    assert (np.diff(kept[first]) > 0).all()


def test_auto_splits_only_cohorts_without_two_multi_session_subjects():
    one = {("01", "1"): [Path("a")], ("02", "1"): [Path("b")]}
    two = {("01", "1"): [Path("a")], ("01", "2"): [Path("c")], ("02", "1"): [Path("b")], ("02", "2"): [Path("d")]}
    assert resolve_split("auto", one) == "runs"
    assert resolve_split("auto", two) == "none"
    assert resolve_split("halves", two) == "halves"


def test_runs_alternate_and_single_runs_fall_back_to_halves():
    attrs = {"tr": 2.0, "kept_frames": list(range(200))}
    runs = [(Path(f"r{i}"), {**attrs, "run": str(i)}) for i in (1, 2, 3)]
    a, b = split_session("runs", runs)
    assert [s.path.name for s in a] == ["r1", "r3"] and [s.path.name for s in b] == ["r2"]
    assert all(s.rows is None for s in a + b)
    a, b = split_session("runs", runs[:1])
    assert a[0].path == b[0].path == Path("r1") and a[0].rows.size + b[0].rows.size == 200 - 2 * 5


def test_a_run_too_short_to_halve_is_bad_input():
    with pytest.raises(BadInputError, match="too short to split"):
        split_session("halves", [(Path("r1"), {"tr": 2.0, "kept_frames": list(range(24)), "run": "1"})])


def test_pseudo_session_names_round_trip():
    assert pseudo_session("1", 0) == "1.a" and pseudo_session("pre", 1) == "pre.b"
    assert real_session("1.a") == "1" and real_session("2") == "2"
    assert is_split(["1.a", "1.b"]) and not is_split(["1", "2"])
