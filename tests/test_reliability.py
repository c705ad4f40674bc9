"""Bad inputs, through the command line: exit code 2, one line per problem, no traceback, nothing written.

Every case of the catalogue in docs/reliability.md is one entry of ``CASES``: a function that
builds the broken input in a temporary folder and returns the command-line arguments, and
the words the message must contain. The tests also check resource estimates and that write
failures (disk full, file-size limits, read-only places) become one-line errors.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from pavi_parcel.cli import main
from pavi_parcel.exceptions import BadInputError, ResourceError
from pavi_parcel.inference.resources import (
    CohortShape,
    choose_batches,
    disk_problems,
    estimate_disk,
    fit_memory,
    plan_fit,
)
from pavi_parcel.io.atomic import as_resource_error, atomic_write, error_number
from pavi_parcel.settings.schema import FitSettings, ModelSettings
from tests.builders import (
    describe,
    func_dir,
    make_confounds,
    write_cifti_run,
    write_confounds,
    write_surface_run,
    write_volume_run,
)

MNI = "MNI152NLin2009cAsym"
ROOT = Path(__file__).resolve().parents[1]
V5 = 10242
SHAPE = (6, 7, 5)
FAST = ["--device", "cpu", "ingest.min_frames=20", "fit.max_steps=2", "export.report=false", "n_jobs=1"]


# --------------------------------------------------------------------------- dataset builders
def vol_run(root: Path, sub: str, ses: str | None = None, n_frames: int = 40, seed: int = 0, shape=SHAPE,
            affine=None, data=None, mask=None, confounds: bool = True, table=None, **kwargs):
    """One volume run (random signal, full mask) with an fMRIPrep-like confounds table."""
    rng = np.random.default_rng(seed)
    data = rng.standard_normal(shape + (n_frames,)).astype(np.float32) + 100 if data is None else data
    folder = func_dir(root, sub, ses)
    ents = {"sub": sub, **({"ses": ses} if ses else {}), "task": "rest"}
    bold, mask_path = write_volume_run(folder, ents, data, mask, affine=affine, **kwargs)
    conf = None
    if confounds:
        conf = write_confounds(folder, ents, make_confounds(data.shape[-1], rng) if table is None else table)
    return bold, mask_path, conf


def vol_dataset(root: Path, n_subjects: int = 2, **kwargs) -> Path:
    describe(root)
    for i in range(n_subjects):
        vol_run(root, f"{i + 1:02d}", seed=i, **kwargs)
    return root


def surf_run(root: Path, sub: str, n_frames: int = 30, n_left: int = V5, n_right: int = V5, frames_right=None,
             seed: int = 0, **kwargs):
    rng = np.random.default_rng(seed)
    left = rng.standard_normal((n_left, n_frames)).astype(np.float32) + 100
    right = rng.standard_normal((n_right, frames_right or n_frames)).astype(np.float32) + 100
    folder = func_dir(root, sub)
    ents = {"sub": sub, "task": "rest"}
    paths = write_surface_run(folder, ents, left, right, **kwargs)
    write_confounds(folder, ents, make_confounds(n_frames, rng))
    return paths


def vol_args(bids: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", str(bids), str(out), "--space", MNI, *FAST, *extra]


# --------------------------------------------------------------------------- the catalogue
def c_bids_missing(tmp):
    return vol_args(tmp / "nope", tmp / "out"), ["BIDS_DIR does not exist", "check the path"]


def c_not_bids(tmp):
    (tmp / "empty").mkdir()
    return vol_args(tmp / "empty", tmp / "out"), ["is not a BIDS dataset", "dataset_description.json"]


def c_bids_is_output(tmp):
    bids = vol_dataset(tmp / "ds")
    (bids / "model").mkdir()
    (bids / "model" / "config.yaml").write_text("seed: 0\n")
    return vol_args(bids, tmp / "out"), ["BIDS_DIR is a pavi-parcel output folder", "fMRIPrep derivatives"]


def c_out_inside_bids(tmp):
    bids = vol_dataset(tmp / "ds")
    return vol_args(bids, bids / "derivatives" / "pavi"), ["OUT_DIR is inside BIDS_DIR"]


def c_out_under_file(tmp):
    bids = vol_dataset(tmp / "ds")
    (tmp / "a_file").write_text("x")
    return vol_args(bids, tmp / "a_file" / "out"), ["Cannot write OUT_DIR", "is a file, not a folder"]


def c_out_not_writable(tmp):
    try:  # root writes through chmod; a kernel file system refuses even root
        os.rmdir(tempfile.mkdtemp(dir="/sys/fs"))
        pytest.skip("/sys/fs is writable here: no place that refuses root")
    except OSError:
        pass
    bids = vol_dataset(tmp / "ds")
    return vol_args(bids, Path("/sys/fs/pavi-out")), ["Cannot write OUT_DIR", "permission denied"]


def c_out_other_dataset(tmp):
    bids = vol_dataset(tmp / "ds")
    other = tmp / "raw"
    describe(other, derivative=True)   # GeneratedBy fMRIPrep
    return vol_args(bids, other), ["holds another dataset", "fMRIPrep", "new OUT_DIR"]


def c_unknown_key(tmp):
    return vol_args(vol_dataset(tmp / "ds"), tmp / "out", "model.n_netwroks=7"), [
        "Unknown configuration key 'model.n_netwroks'"]


def c_wrong_type(tmp):
    return vol_args(vol_dataset(tmp / "ds"), tmp / "out", "model.n_networks=seven"), [
        "Invalid model.n_networks", "'seven'"]


def c_k_too_small(tmp):
    return vol_args(vol_dataset(tmp / "ds"), tmp / "out", "--n-networks", "1"), ["K >= 2", "got 1"]


def c_k_too_large(tmp):
    return vol_args(vol_dataset(tmp / "ds"), tmp / "out", "--n-networks", "500"), [
        "model.n_networks=500 is larger than the number of vertices", "K <= 210"]


def c_bad_values(tmp):
    return vol_args(vol_dataset(tmp / "ds"), tmp / "out", "fit.batch_subjects=0", "fit.lr=-1", "seed=-2",
                    "model.calibration=tempered"), [
        "4 input problems", "fit.batch_subjects", "fit.lr", "Invalid seed", "model.calibration"]


def c_not_key_value(tmp):
    return vol_args(vol_dataset(tmp / "ds"), tmp / "out", "nonsense"), ["Cannot parse argument 'nonsense'",
                                                                          "KEY=VALUE"]


def c_bad_choice(tmp):
    return vol_args(vol_dataset(tmp / "ds"), tmp / "out", "ingest.motion=all"), ["ingest.motion", "'all'"]


def c_bad_device(tmp):
    return vol_args(vol_dataset(tmp / "ds"), tmp / "out", "device=tpu"), ["Invalid device", "'tpu'"]


def c_wrong_space(tmp):
    bids = vol_dataset(tmp / "ds")
    return ["fit", str(bids), str(tmp / "out"), "--space", "fsaverage5", *FAST], [
        "No BOLD runs found", f"use --space {MNI}"]


def c_unsupported_surface(tmp):
    return ["fit", str(vol_dataset(tmp / "ds")), str(tmp / "out"), "--space", "fsnative"], [
        "Unsupported surface space 'fsnative'"]


def c_unknown_participant(tmp):
    return vol_args(vol_dataset(tmp / "ds"), tmp / "out", "--participant-label", "07"), [
        "Unknown participant '07'", "01, 02"]


def c_missing_hemi(tmp):
    describe(tmp / "ds")
    left, right = surf_run(tmp / "ds", "01", n_frames=8)
    right.unlink()
    return ["fit", str(tmp / "ds"), str(tmp / "out"), *FAST], ["lacks its hemi-R GIFTI"]


def c_hemi_vertices(tmp):
    describe(tmp / "ds")
    surf_run(tmp / "ds", "01", n_frames=8, n_right=2562)
    return ["fit", str(tmp / "ds"), str(tmp / "out"), *FAST], ["has 2562 vertices", "10242 vertices"]


def c_hemi_frames(tmp):
    describe(tmp / "ds")
    surf_run(tmp / "ds", "01", n_frames=8, frames_right=7)
    return ["fit", str(tmp / "ds"), str(tmp / "out"), *FAST], ["different numbers of frames", "8 (L) and 7 (R)"]


def c_single_frame_gifti(tmp):
    describe(tmp / "ds")
    surf_run(tmp / "ds", "01", n_frames=1)
    return ["fit", str(tmp / "ds"), str(tmp / "out"), *FAST], ["is not a time series", "1 frame"]


def c_tr_conflict(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", tr=3.0, sidecar_tr=2.0)
    return vol_args(tmp / "ds", tmp / "out"), ["Repetition times disagree", "2 s from RepetitionTime", "3 s from"]


def c_tr_hemis(tmp):
    describe(tmp / "ds")
    left, right = surf_run(tmp / "ds", "01", n_frames=8, sidecar_tr=None)
    text = right.read_text().replace("2000.000000", "1500.000000")
    right.write_text(text)
    return ["fit", str(tmp / "ds"), str(tmp / "out"), *FAST], ["Repetition times disagree", "1.5 s", "2 s"]


def c_no_tr(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", tr=0.0, sidecar_tr=None)
    return vol_args(tmp / "ds", tmp / "out"), ["No repetition time", "RepetitionTime"]


def c_duplicate_run(tmp):
    bids = vol_dataset(tmp / "ds", n_subjects=1)
    copy = bids / "derivatives" / "fmriprep"
    describe(copy)
    vol_run(copy, "01")
    return vol_args(bids, tmp / "out"), ["Two BOLD files for run sub-01_task-rest", "single fMRIPrep output"]


def c_broken_symlink(tmp):
    bids = vol_dataset(tmp / "ds", n_subjects=1)
    bold = next(bids.rglob("*_bold.nii.gz"))
    bold.unlink()
    bold.symlink_to(tmp / "annex" / "MD5E-s123.nii.gz")
    return vol_args(bids, tmp / "out"), ["is a broken symbolic link", "datalad get"]


def c_truncated_gifti(tmp):
    describe(tmp / "ds")
    left, _ = surf_run(tmp / "ds", "01", n_frames=8)
    left.write_bytes(left.read_bytes()[: left.stat().st_size // 2])
    return ["fit", str(tmp / "ds"), str(tmp / "out"), *FAST], ["Cannot read", left.name, "truncated"]


def c_corrupt_nifti(tmp):
    bids = vol_dataset(tmp / "ds", n_subjects=1)
    bold = next(bids.rglob("*_bold.nii.gz"))
    bold.write_bytes(gzip.compress(b"not an image" * 10))
    return vol_args(bids, tmp / "out"), ["Cannot read the NIfTI header", bold.name]


def c_bad_json(tmp):
    bids = vol_dataset(tmp / "ds", n_subjects=1)
    sidecar = next(bids.rglob("*_bold.json"))
    sidecar.write_text("{RepetitionTime: 2")
    return vol_args(bids, tmp / "out"), ["Cannot read the sidecar", "a valid JSON file"]


def c_volume_3d(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", data=np.ones(SHAPE, dtype=np.float32), confounds=False)
    return vol_args(tmp / "ds", tmp / "out"), ["is not a 4-D time series", "shape (6, 7, 5)"]


def c_mask_shape(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", mask=np.ones((6, 7, 4)))
    return vol_args(tmp / "ds", tmp / "out"), ["is not on the grid of", "shape (6, 7, 4)"]


def c_mask_affine(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", mask_affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    return vol_args(tmp / "ds", tmp / "out"), ["is not on the grid of", "another affine"]


def c_mask_missing(tmp):
    bids = vol_dataset(tmp / "ds", n_subjects=1)
    next(bids.rglob("*_mask.nii.gz")).unlink()
    return vol_args(bids, tmp / "out"), ["No brain mask for", "desc-brain_mask"]


def c_mask_empty(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", mask=np.zeros(SHAPE))
    return vol_args(tmp / "ds", tmp / "out"), ["is empty", "0 voxels"]


def c_confounds_rows(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", table=make_confounds(35, np.random.default_rng(0)))
    return vol_args(tmp / "ds", tmp / "out"), ["does not match its run", "40 rows", "35 rows"]


def c_confounds_columns(tmp):
    describe(tmp / "ds")
    table = make_confounds(40, np.random.default_rng(0))
    vol_run(tmp / "ds", "01", table=table[[c for c in table if "derivative" not in c]])
    return vol_args(tmp / "ds", tmp / "out"), ["does not fit ingest.strategy", "missing columns trans_x_derivative1",
                                                 "ingest.motion=basic"]


def c_confounds_nan(tmp):
    describe(tmp / "ds")
    table = make_confounds(40, np.random.default_rng(0))
    table.loc[17, "trans_x"] = np.nan
    vol_run(tmp / "ds", "01", table=table)
    return vol_args(tmp / "ds", tmp / "out"), ["n/a or infinite values", "trans_x"]


def c_confounds_missing(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", confounds=False)
    return vol_args(tmp / "ds", tmp / "out", "ingest.on_missing_confounds=error"), [
        "No confounds table for run sub-01_task-rest", "on_missing_confounds=warn"]


def c_all_scrubbed(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", table=make_confounds(40, np.random.default_rng(0), fd=np.full(40, 2.0)))
    return vol_args(tmp / "ds", tmp / "out"), ["No run passed the quality gates", "of 40 frames kept",
                                                "ingest.min_frames", "fd_threshold"]


def c_mixed_grids(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01")
    vol_run(tmp / "ds", "02", shape=(4, 5, 4), affine=np.diag([3.0, 3.0, 3.0, 1.0]))
    return vol_args(tmp / "ds", tmp / "out"), ["different voxel grids", "shape (6, 7, 5)", "shape (4, 5, 4)"]


def c_constant_signal(tmp):
    describe(tmp / "ds")          # the only run: with others, it is excluded by the quality gates instead
    vol_run(tmp / "ds", "01", data=np.full(SHAPE + (40,), 7.0, dtype=np.float32))
    return vol_args(tmp / "ds", tmp / "out"), ["No run passed the quality gates", "sub-01_task-rest (no valid "
                                               "vertex in the brain mask)"]


def c_nan_values(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01")
    data = np.random.default_rng(1).standard_normal(SHAPE + (40,)).astype(np.float32)
    data[2, 3, 1, 5] = np.nan
    vol_run(tmp / "ds", "02", data=data)
    return vol_args(tmp / "ds", tmp / "out"), ["has NaN or infinite values", "1 non-finite values"]


def c_many_at_once(tmp):
    describe(tmp / "ds")
    vol_run(tmp / "ds", "01", table=make_confounds(35, np.random.default_rng(0)))
    vol_run(tmp / "ds", "02", mask=np.ones((6, 7, 4)))
    vol_run(tmp / "ds", "03", data=np.ones(SHAPE, dtype=np.float32), confounds=False)
    return vol_args(tmp / "ds", tmp / "ds" / "out"), [
        "4 input problems", "OUT_DIR is inside BIDS_DIR", "does not match its run", "not on the grid",
        "not a 4-D time series"]


def cifti_dataset(root: Path, n_subjects: int = 2, **kwargs) -> Path:
    """fMRIPrep --cifti-output 91k runs with their confounds; ``kwargs`` break the last subject's."""
    describe(root)
    for i in range(n_subjects):
        ents = {"sub": f"{i + 1:02d}", "task": "rest"}
        write_cifti_run(func_dir(root, ents["sub"]), ents, n_frames=40, seed=i,
                        **(kwargs if i == n_subjects - 1 else {}))
        write_confounds(func_dir(root, ents["sub"]), ents, make_confounds(40, np.random.default_rng(i)))
    return root


def cifti_args(bids: Path, out: Path, *extra: str) -> list[str]:
    return ["fit", str(bids), str(out), "--space", "fsLR", *FAST, *extra]


def c_cifti_grayordinates(tmp):
    return cifti_args(cifti_dataset(tmp / "ds", subcortex=False), tmp / "out"), [
        "sub-02_task-rest_space-fsLR_den-91k_bold.dtseries.nii has 59,412 grayordinates", "91,282 (den-91k)"]


def c_cifti_no_cortex(tmp):
    return cifti_args(cifti_dataset(tmp / "ds", structures="L"), tmp / "out"), [
        "lacks cortical grayordinates", "CIFTI_STRUCTURE_CORTEX_RIGHT"]


def c_cifti_dscalar(tmp):
    return cifti_args(cifti_dataset(tmp / "ds", kind="dscalar"), tmp / "out"), ["is a dscalar", "dtseries"]


def c_cifti_series_unit(tmp):
    return cifti_args(cifti_dataset(tmp / "ds", unit="HERTZ"), tmp / "out"), ["series axis", "HERTZ", "SECOND"]


def c_two_spaces_auto(tmp):
    bids = cifti_dataset(tmp / "ds")
    surf_run(bids, "01")
    args = [a for a in cifti_args(bids, tmp / "out") if a not in ("--space", "fsLR")]
    return args, ["Runs in 2 spaces", "space-fsLR (2 CIFTI run(s))", "--space fsLR"]


def c_cifti_gifti_mixed(tmp):
    bids = cifti_dataset(tmp / "ds")
    surf_run(bids, "03")
    return cifti_args(bids, tmp / "out"), ["CIFTI and GIFTI runs mixed in one cohort", "participant 03"]


def c_cifti_other_space(tmp):
    bids = cifti_dataset(tmp / "ds")
    args = cifti_args(bids, tmp / "out")
    args[args.index("fsLR")] = "fsaverage5"
    return args, ["No BOLD runs found", "found space-fsLR_den-91k runs (CIFTI); use --space fsLR"]


CASES = {name[2:]: func for name, func in globals().items() if name.startswith("c_")}


def snapshot(folder: Path) -> dict[str, str] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_per_problem(code: int, err: str, needles: list[str]) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    message = err[err.index("pavi-parcel: error:"):].rstrip("\n")
    lines = message.splitlines()
    if len(lines) > 1:
        assert lines[0].endswith(f"{len(lines) - 1} input problems found:")
        problems = [line.split(". ", 1)[1] for line in lines[1:]]
        assert [line.split(".", 1)[0].strip() for line in lines[1:]] == [str(i) for i in range(1, len(lines))]
    else:
        problems = [message.removeprefix("pavi-parcel: error: ")]
    for problem in problems:   # the template: what, expected, got, fix
        assert ": expected " in problem and ", got " in problem and ". Fix: " in problem, problem
    for needle in needles:
        assert needle in message, (needle, message)
    return message


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line_and_writes_nothing(case, tmp_path, capsys):
    args, needles = CASES[case](tmp_path)
    out = Path(args[2])
    before = snapshot(out)
    capsys.readouterr()
    code = main(args)
    assert_one_line_per_problem(code, capsys.readouterr().err, needles)
    assert snapshot(out) == before          # OUT_DIR absent, or unchanged
    assert not (tmp_path / "out").exists() or before is not None


# --------------------------------------------------------------------------- earlier runs in OUT_DIR
def test_incompatible_out_dir_needs_force_and_same_command_resumes(tmp_path, capsys):
    bids = vol_dataset(tmp_path / "ds")
    out = tmp_path / "out"
    assert main(vol_args(bids, out, "--n-networks", "3", "--stop-after", "ingest")) == 0
    saved = (out / "model" / "config.yaml").read_text()
    assert f"bids_dir: {bids}" in saved                    # folders saved resolved, for the comparison
    assert main(vol_args(bids, out, "--n-networks", "3", "--stop-after", "ingest")) == 0   # same command: fine
    before = snapshot(out)
    capsys.readouterr()
    code = main(vol_args(bids, out, "--n-networks", "4", "--stop-after", "ingest"))
    message = assert_one_line_per_problem(code, capsys.readouterr().err,
                                          ["holds results made with other settings", "model.n_networks 3 -> 4",
                                           "force=true"])
    assert len(message.splitlines()) == 1 and snapshot(out) == before
    (out / "model" / "posterior.h5").write_bytes(b"earlier results")
    (out / "sub-01" / "anat").mkdir(parents=True)
    (out / "sub-01" / "anat" / "sub-01_space-x_seg-pavi3_dseg.nii.gz").write_bytes(b"old map")
    assert main(vol_args(bids, out, "--n-networks", "4", "--stop-after", "ingest", "force=true")) == 0
    assert not (out / "model" / "posterior.h5").exists() and not (out / "sub-01").exists()
    assert "n_networks: 4" in (out / "model" / "config.yaml").read_text()
    assert len(list((out / "work" / "timeseries").glob("*.h5"))) == 2   # caches kept


# --------------------------------------------------------------------------- resources
def test_disk_estimate_matches_a_real_fingerprint_store_and_flags_a_small_disk(tmp_path):
    from pavi_parcel.spaces import VolumeSpace
    from pavi_parcel.stores.fingerprints import FingerprintWriter

    s, t, n, d = 3, 2, 500, 100
    shape = CohortShape(frames=[40] * 6, n_points=n, n_subjects=s, n_sessions=t, n_seeds=d, n_networks=7,
                        n_total=1000)
    needs = estimate_disk(shape)
    writer = FingerprintWriter(tmp_path / "fp.h5", ["1", "2", "3"], ["1", "2"], np.ones((s, t), bool),
                               np.arange(n), np.arange(d), VolumeSpace("x", (10, 10, 10), np.eye(4)), 0.1, {})
    for i in range(s):
        for j in range(t):
            writer.write(i, j, np.zeros((n, 13), np.uint8))
    size = writer.finish().stat().st_size
    assert needs["fingerprints"] <= size <= needs["fingerprints"] + 64 * 1024   # raw bytes plus HDF5 overhead
    assert needs["timeseries"] == 6 * 40 * n * 4
    ok = disk_problems(needs, tmp_path / "work", tmp_path / "out", free={tmp_path / "work": 10**12})
    assert ok == []
    (tight,) = disk_problems(needs, tmp_path / "work", tmp_path / "out", free={tmp_path / "work": 1000})
    assert isinstance(tight, ResourceError) and "Not enough disk space" in tight.message
    assert "work_dir=PATH" in tight.message and "0.00 GB free" in tight.message


def test_batches_shrink_to_fit_memory_then_stop_with_a_clear_error():
    fit = FitSettings(method="pavi_e", batch_subjects=8, batch_vertices=4096, memory_budget_gb=2.0)
    big = choose_batches(100, 2, 18715, 1175, 17, fit, available=64 * 2**30)
    assert (big.batch_subjects, big.batch_vertices, big.changed) == (8, 4096, False)
    need = fit_memory(100, 2, 18715, 1175, 17, 8, 4096, 2.0, "pavi_e").total
    small = choose_batches(100, 2, 18715, 1175, 17, fit, available=int(need * 0.6))
    assert small.changed and small.memory.total <= 0.8 * need * 0.6
    assert small.memory_budget_gb < 2.0 or small.batch_vertices < 4096
    with pytest.raises(ResourceError, match="Not enough memory to fit 1000 subjects"):
        choose_batches(1000, 2, 18715, 1175, 17, fit.replace(method="svi"), available=2**30)


def test_plan_fit_rejects_k_above_the_store_vertices(tmp_path):
    from pavi_parcel.spaces import VolumeSpace
    from pavi_parcel.stores.fingerprints import FingerprintWriter

    writer = FingerprintWriter(tmp_path / "fp.h5", ["1"], ["1"], np.ones((1, 1), bool), np.arange(12),
                               np.arange(16), VolumeSpace("x", (4, 4, 4), np.eye(4)), 0.1, {})
    writer.write(0, 0, np.zeros((12, 2), np.uint8))
    path = writer.finish()
    with pytest.raises(BadInputError, match="larger than the 12 vertices"):
        plan_fit(path, ModelSettings(n_networks=13), FitSettings(), "cpu")
    fit = plan_fit(path, ModelSettings(n_networks=3), FitSettings(batch_vertices=4096), "cpu", available=2**34)
    assert fit.batch_vertices == 4096 and fit.batch_subjects == 4


# --------------------------------------------------------------------------- write failures
def test_write_errors_become_resource_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ResourceError, match="a regular file in the way"):
        with atomic_write(tmp_path / "file" / "sub" / "x.json") as tmp:
            tmp.write_text("{}")
    import h5py

    try:
        h5py.File(tmp_path / "file" / "x.h5", "w")
    except OSError as exc:   # h5py puts the number in the message only
        assert error_number(exc) == errno.ENOTDIR
    full = OSError(errno.ENOSPC, "No space left on device")
    assert "Disk full" in as_resource_error(full, tmp_path / "a.h5").message
    h5_full = OSError("Can't write data (file write failed: time = x, filename = 'a', errno = 28, "
                      "error message = 'No space left on device')")
    assert "Disk full" in as_resource_error(h5_full, tmp_path / "a.h5").message
    other = ValueError("not a write problem")
    assert as_resource_error(other, tmp_path / "a.h5") is other


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_file_size_limit_during_export_is_one_line_and_leaves_no_partial_file(tmp_path):
    from pavi_parcel.spaces import FsaverageSpace
    from pavi_parcel.stores.posterior import Posterior, write_posterior

    rng = np.random.default_rng(0)
    n, k = 2 * V5, 7
    probs = rng.dirichlet(np.ones(k), size=(2, n)).astype(np.float32)
    out = tmp_path / "out"
    write_posterior(out / "model" / "posterior.h5", Posterior(
        probs, probs.mean(0), rng.standard_normal((k, 20)).astype(np.float32), ["01", "02"], ["1"],
        np.arange(n), FsaverageSpace("fsaverage5"), {"method": "pavi_e"}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pavi_parcel.cli", "export", "maps", str(out)], env=env,
                          capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("pavi-parcel: error:")]
    assert "File size limit reached while writing" in line and "ulimit -f" in line
    assert not list(out.rglob(".tmp-*"))


LIMITED_WRITES = """
import sys
from pathlib import Path
import numpy as np, torch
from pavi_parcel.inference.checkpoint import save_checkpoint
from pavi_parcel.exceptions import ResourceError
from pavi_parcel.stores.posterior import Posterior, write_posterior
from pavi_parcel.spaces import FsaverageSpace, VolumeSpace
out = Path(sys.argv[1])
big = np.ones((1, 300_000, 2), np.float32) / 2
post = Posterior(big, big[0], np.ones((2, 4), np.float32), ["01"], ["1"], np.arange(300_000),
                 VolumeSpace("x", (300_000, 1, 1), np.eye(4)), {})
for name, write in (("h5py", lambda: write_posterior(out / "posterior.h5", post)),
                    ("torch", lambda: save_checkpoint(out / "checkpoint.pt", {"w": torch.ones(300_000)}))):
    try:
        write()
        print(name, "written")
    except ResourceError as exc:
        print(name, exc.message)
"""


def test_file_size_limit_in_h5py_and_torch_writers_is_a_resource_error(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", LIMITED_WRITES, str(tmp_path)], env=env, capture_output=True,
                          text=True, preexec_fn=_limit_file_size, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[0] for ln in lines] == ["h5py", "torch"]
    assert all("File size limit reached while writing" in ln for ln in lines), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == []     # no partial or temporary file left


def test_killed_writer_leaves_the_old_file_and_a_rebuilt_partial_store(tmp_path):
    """A partial fingerprint store that cannot be opened (killed at creation) is rebuilt."""
    from pavi_parcel.spaces import VolumeSpace
    from pavi_parcel.stores.fingerprints import FingerprintStore, FingerprintWriter

    target = tmp_path / "fp.h5"
    (tmp_path / "fp.h5.partial").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)   # truncated HDF5
    args = (["1", "2"], ["1"], np.ones((2, 1), bool), np.arange(30), np.arange(16),
            VolumeSpace("x", (4, 4, 4), np.eye(4)), 0.1, {"k": 1})
    writer = FingerprintWriter(target, *args)
    writer.write(0, 0, np.full((30, 2), 3, np.uint8))
    writer.close()                                   # interrupted after one entry
    resumed = FingerprintWriter(target, *args)
    assert resumed.is_done(0, 0) and not resumed.is_done(1, 0)
    resumed.write(1, 0, np.full((30, 2), 5, np.uint8))
    resumed.finish()
    with FingerprintStore(target) as store:
        raw = store.read_packed(1, None)
    assert raw.shape == (1, 30, 2) and (raw == 5).all()
    with h5_open(target) as h5:
        assert h5["bits"].chunks is None            # contiguous: entries are overwritten in place


def h5_open(path):
    import h5py

    return h5py.File(path, "r")
