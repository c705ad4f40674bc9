"""Ingestion with the real nilearn maskers on tiny fMRIPrep-like runs with planted answers."""

from __future__ import annotations

import gzip
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from pavi_parcel.bids.discovery import find_runs
from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.ingest.cleaning import ingest_runs
from pavi_parcel.ingest.runcheck import plan_runs
from pavi_parcel.settings.rules import build
from pavi_parcel.settings.schema import IngestSettings
from pavi_parcel.spaces.gifti import scan_gifti
from pavi_parcel.stores.timeseries import read_run_timeseries
from tests.builders import describe, func_dir, make_confounds, write_confounds, write_surface_run, write_volume_run

V5 = 10242  # vertices per fsaverage5 hemisphere
TR = 2.0


def _corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of a (T, n) with b (T,)."""
    a = a - a.mean(0)
    b = b - b.mean()
    return (a * b[:, None]).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b) + 1e-12)


def surface_run(root: Path, sub: str, n_frames: int = 60, seed: int = 0, confounds: bool = True,
                space: str = "fsaverage5", n_vertices: int = V5, **conf_kwargs):
    """Random hemispheres (plus a medial wall of zeros on the first 40 vertices of each)."""
    rng = np.random.default_rng(seed)
    left = rng.standard_normal((n_vertices, n_frames)).astype(np.float32) + 100
    right = rng.standard_normal((n_vertices, n_frames)).astype(np.float32) + 100
    left[:40] = 0
    right[:40] = 0
    folder = func_dir(root, sub)
    ents = {"sub": sub, "task": "rest"}
    paths = write_surface_run(folder, ents, left, right, space=space)
    table = write_confounds(folder, ents, make_confounds(n_frames, rng, **conf_kwargs)) if confounds else None
    return paths, table, (left, right)


def _cfg(**overrides) -> IngestSettings:
    return IngestSettings(**{"min_frames": 20, **overrides})


# --------------------------------------------------------------------------- planted answers
def test_surface_run_masked_cleaned_and_described(tmp_path):
    describe(tmp_path)
    n_frames = 80
    rng = np.random.default_rng(3)
    left = rng.standard_normal((V5, n_frames)).astype(np.float32) + 50
    right = rng.standard_normal((V5, n_frames)).astype(np.float32) + 50
    left[:30] = 0                     # medial wall
    right[10] = 5.0                   # constant vertex
    sine = np.sin(2 * np.pi * 0.05 * TR * np.arange(n_frames))
    right[100] += 10 * sine.astype(np.float32)
    folder = func_dir(tmp_path, "01", "1")
    ents = {"sub": "01", "ses": "1", "task": "rest", "run": "2"}
    write_surface_run(folder, ents, left, right, space="fsaverage5")
    fd = np.full(n_frames, 0.1)
    fd[40] = 0.9                      # one high-motion frame
    write_confounds(folder, ents, make_confounds(n_frames, rng, fd=fd, n_nonsteady=1))
    runs = find_runs(tmp_path, "fsaverage5")
    (path,) = ingest_runs(runs, tmp_path / "work", _cfg(strategy=["motion", "scrub"], motion="basic"))
    assert path == tmp_path / "work" / "timeseries" / "sub-01_ses-1_task-rest_run-2.h5"

    stored = read_run_timeseries(path)
    valid = np.r_[np.arange(30, V5), V5 + np.setdiff1d(np.arange(V5), [10])]
    np.testing.assert_array_equal(stored.vertex_index, valid)
    kept = np.setdiff1d(np.arange(n_frames), [0, 40])   # non-steady-state frame 0, scrubbed frame 40
    assert stored.data.shape == (kept.size, valid.size) and stored.data.dtype == np.float32
    np.testing.assert_allclose(stored.data.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(stored.data.std(0, ddof=1), 1, atol=1e-3)
    corr = _corr(stored.data, sine[kept])      # the planted vertex stands out among all columns
    assert stored.vertex_index[np.argmax(corr)] == V5 + 100 and corr.max() > 0.8
    a = stored.attrs
    assert (a["subject"], a["session"], a["task"], a["run"], a["space"]) == ("01", "1", "rest", "2", "fsaverage5")
    assert (a["n_total"], a["tr"], a["n_frames_total"], a["n_frames_kept"]) == (2 * V5, TR, n_frames, kept.size)
    assert a["kept_frames"] == kept.tolist()
    assert a["mean_fd"] == pytest.approx(np.mean(fd[1:]))
    assert [Path(p).name for p in a["source_files"]] == [p.name for p in (*runs[0].bold, runs[0].confounds)]
    assert a["strategy"]["strategy"] == ["motion", "scrub"] and a["strategy"]["confounds_table"] is True
    assert len(a["strategy"]["confound_columns"]) == 6 and len(a["fingerprint"]) == 64


def test_confound_regression_removes_injected_motion(tmp_path):
    describe(tmp_path)
    n_frames, n_sig = 120, 200
    rng = np.random.default_rng(7)
    motion = np.cumsum(rng.standard_normal(n_frames)) * 0.05   # slow, drifting head motion
    motion -= motion.mean()
    left = rng.standard_normal((V5, n_frames)).astype(np.float32) + 100
    right = rng.standard_normal((V5, n_frames)).astype(np.float32) + 100
    left[:n_sig] += (40 * motion).astype(np.float32)           # motion artefact on 200 vertices
    folder = func_dir(tmp_path, "01")
    ents = {"sub": "01", "task": "rest"}
    write_surface_run(folder, ents, left, right, space="fsaverage5")
    write_confounds(folder, ents, make_confounds(n_frames, rng, motion=motion))
    runs = find_runs(tmp_path, "fsaverage5")

    raw_corr = _corr(left[:n_sig].T.astype(float), motion)
    assert np.mean(np.abs(raw_corr)) > 0.5
    (kept_motion,) = ingest_runs(runs, tmp_path / "none", _cfg(strategy=[], high_pass=None))
    before = read_run_timeseries(kept_motion)
    assert np.mean(np.abs(_corr(before.data[:, :n_sig], motion))) > 0.5
    (cleaned,) = ingest_runs(runs, tmp_path / "default", _cfg())  # default strategy: motion, wm_csf, ...
    after = read_run_timeseries(cleaned)
    assert after.attrs["n_frames_kept"] == n_frames
    assert np.max(np.abs(_corr(after.data[:, :n_sig], motion))) < 0.1
    assert len(after.attrs["strategy"]["confound_columns"]) == 24 + 2 + 2  # motion full, wm/csf, cosines


def test_volume_run_grid_index_and_affine(tmp_path):
    describe(tmp_path)
    n_frames, shape = 60, (6, 7, 5)
    rng = np.random.default_rng(5)
    data = rng.standard_normal(shape + (n_frames,)).astype(np.float32) + 10
    mask = np.zeros(shape, dtype=bool)
    mask[1:5, 1:6, 1:4] = True
    data[2, 2, 2] = 3.0                                   # constant voxel inside the mask
    sine = np.sin(2 * np.pi * 0.06 * TR * np.arange(n_frames))
    data[3, 4, 1] += 10 * sine
    affine = np.array([[2.0, 0, 0, -6], [0, 2.0, 0, -7], [0, 0, 2.0, -5], [0, 0, 0, 1]])
    folder = func_dir(tmp_path, "01")
    ents = {"sub": "01", "task": "rest"}
    write_volume_run(folder, ents, data, mask, res="2", affine=affine)
    write_confounds(folder, ents, make_confounds(n_frames, rng))
    (path,) = ingest_runs(find_runs(tmp_path, "MNI152NLin2009cAsym"), tmp_path / "work", _cfg(motion="basic"))
    stored = read_run_timeseries(path)
    valid = mask.copy()
    valid[2, 2, 2] = False
    np.testing.assert_array_equal(stored.vertex_index, np.flatnonzero(valid))
    assert stored.data.shape == (n_frames, valid.sum())
    assert tuple(stored.attrs["grid_shape"]) == shape and stored.attrs["n_total"] == int(np.prod(shape))
    np.testing.assert_allclose(stored.attrs["affine"], affine)
    corr = _corr(stored.data, sine)            # the planted voxel stands out among all columns
    assert stored.vertex_index[np.argmax(corr)] == np.ravel_multi_index((3, 4, 1), shape) and corr.max() > 0.6


def test_older_fmriprep_names_ingest_like_new_ones(tmp_path):
    describe(tmp_path)
    rng = np.random.default_rng(2)
    left, right = (rng.standard_normal((V5, 40)).astype(np.float32) for _ in range(2))
    folder = func_dir(tmp_path, "01")
    ents = {"sub": "01", "task": "rest", "run": "1"}
    write_surface_run(folder, ents, left, right, order="old")
    write_confounds(folder, ents, make_confounds(40, rng, n_nonsteady=2), old=True)
    (path,) = ingest_runs(find_runs(tmp_path, "fsaverage5"), tmp_path / "work", _cfg())
    stored = read_run_timeseries(path)
    assert stored.attrs["kept_frames"] == list(range(2, 40)) and stored.data.shape == (38, 2 * V5)
    assert "trans_x_derivative1_power2" in stored.attrs["strategy"]["confound_columns"]


# --------------------------------------------------------------------------- caching
def _stamp(paths):
    return [(os.stat(p).st_ino, os.stat(p).st_mtime_ns) for p in paths]


def test_rerun_skips_unchanged_runs_and_redoes_changed_ones(tmp_path):
    describe(tmp_path)
    tables = {}
    for i, sub in enumerate(("01", "02", "03")):
        _, tables[sub], _ = surface_run(tmp_path, sub, n_frames=30, seed=i)
    runs = find_runs(tmp_path, "fsaverage5")
    work = tmp_path / "work"
    first = ingest_runs(runs, work, _cfg(), n_jobs=2)
    assert [p.stem for p in first] == [r.key for r in runs]
    stamps = _stamp(first)
    assert ingest_runs(runs, work, _cfg(), n_jobs=2) == first and _stamp(first) == stamps

    table = tables["02"]
    table.write_text(table.read_text().replace("\t1.0", "\t1.1"))   # a changed input file
    again = ingest_runs(find_runs(tmp_path, "fsaverage5"), work, _cfg())
    changed = [a != b for a, b in zip(_stamp(again), stamps)]
    assert changed == [False, True, False]

    stamps = _stamp(again)
    ingest_runs(runs, work, _cfg(fd_threshold=0.4))                   # a changed setting
    assert all(a != b for a, b in zip(_stamp(again), stamps))


# --------------------------------------------------------------------------- bad input
def _runs_after(tmp_path, space="fsaverage5"):
    return find_runs(tmp_path, space)


def test_hemispheres_with_different_frame_counts(tmp_path):
    describe(tmp_path)
    rng = np.random.default_rng(0)
    folder = func_dir(tmp_path, "01")
    write_surface_run(folder, {"sub": "01", "task": "rest"}, rng.standard_normal((V5, 30)),
                      rng.standard_normal((V5, 29)), space="fsaverage5")
    with pytest.raises(BadInputError, match=r"different numbers of frames.*30 \(L\) and 29 \(R\)"):
        ingest_runs(_runs_after(tmp_path), tmp_path / "work", _cfg(), n_jobs=1)


def test_truncated_gifti_and_nifti(tmp_path):
    describe(tmp_path)
    (left_path, _), _, _ = surface_run(tmp_path, "01", n_frames=30)
    left_path.write_bytes(left_path.read_bytes()[: left_path.stat().st_size // 2])
    with pytest.raises(BadInputError, match="Cannot read .*hemi-L"):
        ingest_runs(_runs_after(tmp_path), tmp_path / "work", _cfg())
    with pytest.raises(BadInputError):
        scan_gifti(left_path)

    garbled = tmp_path / "garbled"
    describe(garbled)
    (_, right_path), _, _ = surface_run(garbled, "01", n_frames=30)
    text = right_path.read_bytes()
    start = text.index(b"<Data>") + 6
    right_path.write_bytes(text[:start] + b"@@@@" + text[start + 4:])      # XML intact, array corrupt
    with pytest.raises(BadInputError, match="Cannot read .*hemi-R"):
        ingest_runs(_runs_after(garbled), garbled / "work", _cfg())

    vol = tmp_path / "vol"
    describe(vol)
    data = np.random.default_rng(1).standard_normal((5, 5, 5, 40))
    bold, _ = write_volume_run(func_dir(vol, "01"), {"sub": "01", "task": "rest"}, data)
    raw = gzip.decompress(bold.read_bytes())
    bold.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) * 2 // 3])
    runs = find_runs(vol, "MNI152NLin2009cAsym")  # the header is intact
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BadInputError, match="Cannot read"):
            ingest_runs(runs, vol / "work", _cfg())
    assert not list((vol / "work" / "timeseries").glob("*"))        # nothing half-written


def test_non_finite_values(tmp_path):
    describe(tmp_path)
    rng = np.random.default_rng(0)
    left, right = rng.standard_normal((V5, 30)), rng.standard_normal((V5, 30))
    right[5, 7] = np.nan
    write_surface_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, left, right, space="fsaverage5")
    with pytest.warns(UserWarning, match="No fMRIPrep confounds"):
        with pytest.raises(BadInputError, match="NaN or infinite values.*1 non-finite"):
            ingest_runs(_runs_after(tmp_path), tmp_path / "work", _cfg())


def test_non_finite_values_inside_a_volume_mask(tmp_path):
    describe(tmp_path)
    data = np.random.default_rng(0).standard_normal((4, 4, 4, 30))
    data[0, 0, 0, 3] = np.nan             # outside the mask: ignored
    mask = np.zeros((4, 4, 4), bool)
    mask[1:3, 1:3, 1:3] = True
    folder = func_dir(tmp_path, "01")
    write_volume_run(folder, {"sub": "01", "task": "rest"}, data, mask)
    data[2, 2, 2, 5] = np.inf
    write_volume_run(folder, {"sub": "01", "task": "rest", "run": "2"}, data, mask)
    with pytest.warns(UserWarning, match="No fMRIPrep confounds"):
        with pytest.raises(BadInputError, match="run-2_.*NaN or infinite") as err:
            ingest_runs(find_runs(tmp_path, "MNI152NLin2009cAsym"), tmp_path / "work", _cfg())
    assert "run-1" not in str(err.value)
    stored = sorted(p.name for p in (tmp_path / "work" / "timeseries").iterdir())
    assert stored == ["sub-01_task-rest.h5"]          # the good run is kept, nothing else left behind


def test_too_few_frames_after_scrubbing(tmp_path):
    describe(tmp_path)
    fd = np.full(60, 0.1)
    fd[5:50:3] = 1.0                  # every third frame moves: scrubbing leaves almost nothing
    surface_run(tmp_path, "01", n_frames=60, fd=fd)
    surface_run(tmp_path, "02", n_frames=60)
    runs = _runs_after(tmp_path)
    plan = plan_runs(runs, tmp_path / "work", IngestSettings(min_frames=50))
    assert [p.run.subject for p in plan.todo] == ["02"]            # a quality gate, not an input error
    assert "of 60 frames kept after scrubbing, below ingest.min_frames=50" in plan.quality[0].reasons[0]
    paths = ingest_runs(runs, tmp_path / "work", IngestSettings(min_frames=50), plan=plan)
    assert paths[0] is None and paths[1].exists()                  # the excluded run is never cleaned
    assert [p.name for p in (tmp_path / "work" / "timeseries").iterdir()] == [paths[1].name]
    with pytest.raises(BadInputError, match="No run passed the quality gates.*17 of 60 frames"):
        plan_runs(runs[:1], tmp_path / "work", IngestSettings(min_frames=50))


def test_three_d_image_and_mask_on_another_grid(tmp_path):
    describe(tmp_path)
    folder = func_dir(tmp_path, "01")
    write_volume_run(folder, {"sub": "01", "task": "rest"}, np.ones((4, 4, 4)))
    write_volume_run(folder, {"sub": "01", "task": "rest", "run": "2"}, np.ones((4, 4, 4, 30)),
                     mask_affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    with pytest.raises(BadInputErrors) as err:
        ingest_runs(find_runs(tmp_path, "MNI152NLin2009cAsym"), tmp_path / "work", _cfg())
    message = str(err.value)
    assert "2 input problems" in message and "not a 4-D time series" in message and "not on the grid" in message


def test_confounds_with_wrong_row_count_or_missing_columns(tmp_path):
    describe(tmp_path)
    rng = np.random.default_rng(0)
    (_, _), table, _ = surface_run(tmp_path, "01", n_frames=40)
    write_confounds(table.parent, {"sub": "01", "task": "rest"}, make_confounds(39, rng))
    with pytest.raises(BadInputError, match="40 rows .*got 39 rows"):
        ingest_runs(_runs_after(tmp_path), tmp_path / "work", _cfg())
    write_confounds(table.parent, {"sub": "01", "task": "rest"}, make_confounds(40, rng).drop(columns="csf"))
    with pytest.raises(BadInputError, match="does not fit ingest.strategy"):
        ingest_runs(_runs_after(tmp_path), tmp_path / "work", _cfg())


def test_missing_confounds_warns_and_falls_back_or_errors(tmp_path):
    describe(tmp_path)
    surface_run(tmp_path, "01", n_frames=40, confounds=False)
    runs = _runs_after(tmp_path)
    with pytest.raises(BadInputError, match="No confounds table for run sub-01_task-rest"):
        ingest_runs(runs, tmp_path / "work", _cfg(on_missing_confounds="error"))
    with pytest.warns(UserWarning, match="detrending and high-pass filtering only"):
        (path,) = ingest_runs(runs, tmp_path / "work", _cfg())
    stored = read_run_timeseries(path)
    assert stored.attrs["n_frames_kept"] == 40 and stored.attrs["strategy"]["confounds_table"] is False
    assert np.isnan(stored.attrs["mean_fd"]) and stored.attrs["strategy"]["confound_columns"] == []


def test_all_problems_reported_at_once_and_good_runs_kept(tmp_path):
    describe(tmp_path)
    surface_run(tmp_path, "01", n_frames=40)
    (_, right), _, _ = surface_run(tmp_path, "02", n_frames=40)
    (_, _), table, _ = surface_run(tmp_path, "03", n_frames=40)
    write_confounds(table.parent, {"sub": "03", "task": "rest"}, make_confounds(41, np.random.default_rng(0)))
    right.write_bytes(right.read_bytes()[:-50])
    with pytest.raises(BadInputErrors) as err:
        ingest_runs(_runs_after(tmp_path), tmp_path / "work", _cfg())
    assert len(err.value.errors) == 2 and "sub-02" in str(err.value) and "sub-03" in str(err.value)
    assert not (tmp_path / "work" / "timeseries").exists()          # validation stops before any work
    with pytest.raises(BadInputError, match="Unknown configuration key 'ingest.fd_treshold'"):
        build(IngestSettings, {"fd_treshold": 0.3})


# --------------------------------------------------------------------------- speed
def test_fsaverage5_run_of_200_frames_ingests_in_well_under_two_seconds(tmp_path):
    describe(tmp_path)
    surface_run(tmp_path, "01", n_frames=200, space="fsaverage5", n_vertices=10242)
    runs = find_runs(tmp_path, "fsaverage5")
    ingest_runs(runs, tmp_path / "warm-up", IngestSettings())          # one-time imports and mesh loading
    wall, cpu = time.perf_counter(), time.process_time()
    (path,) = ingest_runs(runs, tmp_path / "work", IngestSettings())   # n_jobs=1 runs in this process
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"ingest of one 20,484-vertex x 200-frame run: {wall:.2f} s wall, {cpu:.2f} s CPU")
    stored = read_run_timeseries(path)
    assert stored.data.shape == (200, 2 * (10242 - 40))
    assert cpu < 2.0  # CPU time: wall time also counts other processes sharing the cores


# --------------------------------------------------------------------------- settings
def test_bad_ingest_values_are_rejected_by_name():
    for bad in ({"low_pass": 0.1}, {"strategy": ["motion", "aroma"]}, {"motion": "all"},
                {"on_missing_confounds": "ignore"}, {"standardize": "robust"}):
        with pytest.raises(BadInputError, match="Invalid ingest"):
            build(IngestSettings, bad)
    assert IngestSettings(low_pass=0.1, filter="butterworth").low_pass == 0.1
