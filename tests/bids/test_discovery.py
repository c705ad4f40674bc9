"""BIDS discovery: names, pairs, sidecars and repetition times on tiny fMRIPrep-like datasets."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from hypothesis import given, strategies as st

from pavi_parcel.bids.discovery import BoldRun, find_runs
from pavi_parcel.bids.entities import build_name, parse_entities
from pavi_parcel.bids.sidecars import read_tr
from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.spaces import FsaverageSpace, FslrSpace, VolumeSpace
from tests.builders import (
    MNI,
    describe,
    func_dir,
    make_confounds,
    tiny_surface,
    write_cifti_run,
    write_confounds,
    write_gifti,
    write_surface_run,
    write_volume_run,
)

FS5, VOL = FsaverageSpace("fsaverage5"), VolumeSpace(MNI)

# --------------------------------------------------------------------------- parse_entities
LABELS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=8)
KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6).filter(
    lambda k: k not in ("suffix", "extension"))


@given(entities=st.dictionaries(KEYS, LABELS, min_size=1, max_size=6), suffix=st.one_of(st.just(""), LABELS),
       extension=st.sampled_from(["", ".func.gii", ".nii.gz", ".tsv", ".json"]))
def test_parse_entities_inverts_build_name(entities, suffix, extension):
    parsed = parse_entities(build_name(entities, suffix, extension))
    assert parsed == {**entities, "suffix": suffix, "extension": extension}
    assert list(parsed)[: len(entities)] == list(entities)  # file-name order is kept


@given(st.text(max_size=40))
def test_parse_entities_never_raises(name):
    parsed = parse_entities(name)
    assert parsed == {} or set(parsed) >= {"suffix", "extension"}


def test_parse_entities_examples():
    new = parse_entities("/d/sub-01_ses-2_task-rest_run-1_hemi-L_space-fsaverage5_bold.func.gii")
    assert new == {"sub": "01", "ses": "2", "task": "rest", "run": "1", "hemi": "L", "space": "fsaverage5",
                   "suffix": "bold", "extension": ".func.gii"}
    old = parse_entities("sub-01_task-rest_space-fsaverage5_hemi-R.func.gii")
    assert old["hemi"] == "R" and old["suffix"] == "" and old["extension"] == ".func.gii"
    assert parse_entities("README") == {} and parse_entities("sub-01__bold.nii") == {}
    assert parse_entities("sub-01_bold_x-1.nii") == {}


# --------------------------------------------------------------------------- discovery
def test_finds_both_surface_name_orders_sessions_runs_and_tasks(tmp_path):
    describe(tmp_path)
    left, right = tiny_surface(n_frames=4)
    rng = np.random.default_rng(0)
    new = func_dir(tmp_path, "01", "1")
    write_surface_run(new, {"sub": "01", "ses": "1", "task": "rest", "run": "1"}, left, right)
    write_surface_run(new, {"sub": "01", "ses": "1", "task": "rest", "run": "2"}, left, right)
    write_surface_run(new, {"sub": "01", "ses": "1", "task": "nback"}, left, right)
    conf = write_confounds(new, {"sub": "01", "ses": "1", "task": "rest", "run": "2"}, make_confounds(4, rng))
    old = func_dir(tmp_path, "02", "2")
    write_surface_run(old, {"sub": "02", "ses": "2", "task": "rest"}, left, right, order="old")
    old_conf = write_confounds(old, {"sub": "02", "ses": "2", "task": "rest"}, make_confounds(4, rng), old=True)
    # a volume run of the same acquisition must not be picked up for fsaverage5
    write_volume_run(old, {"sub": "02", "ses": "2", "task": "rest"}, np.ones((2, 2, 2, 4)))

    runs = find_runs(tmp_path, "fsaverage5")
    assert [r.key for r in runs] == ["sub-01_ses-1_task-nback", "sub-01_ses-1_task-rest_run-1",
                                     "sub-01_ses-1_task-rest_run-2", "sub-02_ses-2_task-rest"]
    by_key = {r.key: r for r in runs}
    assert by_key["sub-01_ses-1_task-rest_run-2"].confounds == conf
    assert by_key["sub-01_ses-1_task-rest_run-1"].confounds is None
    assert by_key["sub-02_ses-2_task-rest"].confounds == old_conf
    r = by_key["sub-02_ses-2_task-rest"]
    assert [p.name for p in r.bold] == ["sub-02_ses-2_task-rest_space-fsaverage5_hemi-L.func.gii",
                                        "sub-02_ses-2_task-rest_space-fsaverage5_hemi-R.func.gii"]
    assert (r.subject, r.session, r.task, r.run, r.space.name, r.mask, r.tr) == ("02", "2", "rest", None,
                                                                            "fsaverage5", None, 2.0)
    assert all(isinstance(x, BoldRun) and len(x.bold) == 2 for x in runs)

    assert [r.key for r in find_runs(tmp_path, "fsaverage5", task="task-rest", sessions=["ses-1"])] == [
        "sub-01_ses-1_task-rest_run-1", "sub-01_ses-1_task-rest_run-2"]
    assert [r.subject for r in find_runs(tmp_path, "fsaverage5", participants=["sub-02"])] == ["02"]
    assert [r.subject for r in find_runs(tmp_path, "fsaverage5", participants=[" 02 "])] == ["02"]


def test_run_order_is_natural_and_key_skips_absent_entities(tmp_path):
    describe(tmp_path)
    left, right = tiny_surface(n_frames=3)
    folder = func_dir(tmp_path, "01")
    for run in ("10", "2", "1"):
        write_surface_run(folder, {"sub": "01", "task": "rest", "run": run}, left, right)
    assert [r.key for r in find_runs(tmp_path, "fsaverage5")] == [
        "sub-01_task-rest_run-1", "sub-01_task-rest_run-2", "sub-01_task-rest_run-10"]


def test_confounds_pair_by_run_entities_not_space_or_hemi(tmp_path):
    describe(tmp_path)
    left, right = tiny_surface(n_frames=3)
    folder = func_dir(tmp_path, "01")
    rng = np.random.default_rng(1)
    write_surface_run(folder, {"sub": "01", "task": "rest", "run": "1"}, left, right)
    write_surface_run(folder, {"sub": "01", "task": "rest", "run": "2"}, left, right)
    run2 = write_confounds(folder, {"sub": "01", "task": "rest", "run": "2"}, make_confounds(3, rng))
    write_confounds(folder, {"sub": "01", "task": "rest", "run": "2"}, make_confounds(3, rng), old=True)
    # a confounds table for another task, and one carrying a space entity, must not pair
    write_confounds(folder, {"sub": "01", "task": "motor", "run": "1"}, make_confounds(3, rng))
    runs = {r.run: r for r in find_runs(tmp_path, "fsaverage5")}
    assert runs["1"].confounds is None
    assert runs["2"].confounds == run2  # the newer _timeseries.tsv wins over _regressors.tsv


def test_volume_runs_pair_brain_masks_with_optional_resolution(tmp_path):
    describe(tmp_path)
    folder = func_dir(tmp_path, "01")
    data = np.random.default_rng(0).standard_normal((3, 3, 3, 5))
    bold, mask = write_volume_run(folder, {"sub": "01", "task": "rest"}, data, res="2")
    bold_b, mask_b = write_volume_run(folder, {"sub": "01", "task": "rest", "run": "1"}, data)
    runs = find_runs(tmp_path, MNI)
    assert [(r.bold, r.mask) for r in runs] == [((bold,), mask), ((bold_b,), mask_b)]
    assert len(runs[0].bold) == 1 and runs[0].space.name == MNI
    assert [r.key for r in find_runs(tmp_path, f"{MNI}:res-2")] == ["sub-01_task-rest"]
    # two resolutions of the same run are ambiguous unless one is chosen
    write_volume_run(folder, {"sub": "01", "task": "rest", "run": "1"}, data, res="1")
    with pytest.raises(BadInputError, match="Two BOLD files"):
        find_runs(tmp_path, MNI)
    mask.unlink()
    with pytest.raises(BadInputError, match="No brain mask"):
        find_runs(tmp_path, f"{MNI}:res-2")


def test_raw_dataset_with_fmriprep_derivatives_inside(tmp_path):
    describe(tmp_path, derivative=False)
    raw = func_dir(tmp_path, "01")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 4), np.float32), np.eye(4)), str(raw / "sub-01_task-rest_bold.nii.gz"))
    (raw / "sub-01_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 1.5}))
    prep = tmp_path / "derivatives" / "fmriprep"
    describe(prep)
    left, right = tiny_surface(n_frames=4)
    write_surface_run(func_dir(prep, "01"), {"sub": "01", "task": "rest"}, left, right,
                      timestep_ms=None, sidecar_tr=None)
    runs = find_runs(tmp_path, "fsaverage5")
    assert len(runs) == 1 and prep in runs[0].bold[0].parents
    assert runs[0].tr == 1.5  # inherited from the raw sidecar
    with pytest.raises(BadInputError, match="use data.space=fsaverage5"):
        find_runs(tmp_path, MNI)
    (tmp_path / "derivatives").rename(tmp_path / "elsewhere")
    with pytest.raises(BadInputError, match="run fMRIPrep first"):
        find_runs(tmp_path, "fsaverage5")


def test_fsaverage_den_alias(tmp_path):
    describe(tmp_path)
    left, right = tiny_surface(n_frames=3)
    folder = func_dir(tmp_path, "01")
    for hemi, data in zip("LR", (left, right)):
        name = build_name({"sub": "01", "task": "rest", "hemi": hemi, "space": "fsaverage", "den": "10k"},
                          "bold", ".func.gii")
        write_gifti(folder / name, data)
    runs = find_runs(tmp_path, "fsaverage5")
    assert len(runs) == 1 and runs[0].space.name == "fsaverage5" and runs[0].tr == 2.0


# --------------------------------------------------------------------------- CIFTI and the space
def test_cifti_runs_as_fmriprep_and_xcpd_name_them(tmp_path):
    describe(tmp_path)
    rng = np.random.default_rng(0)
    ents = {"sub": "01", "ses": "1", "task": "rest"}
    folder = func_dir(tmp_path, "01", "1")
    fmriprep = write_cifti_run(folder, ents, n_frames=3)                      # --cifti-output 91k
    write_confounds(folder, ents, make_confounds(3, rng))
    xcpd = write_cifti_run(folder, {**ents, "run": "2"}, n_frames=3, desc="denoised")
    write_confounds(folder, {**ents, "run": "2"}, make_confounds(3, rng))
    old = write_cifti_run(func_dir(tmp_path, "02"), {"sub": "02", "task": "rest"}, n_frames=3, den="32k")
    hcp_like = write_cifti_run(func_dir(tmp_path, "03"), {"sub": "03", "task": "rest"}, n_frames=3, den=None,
                               step=0.72, sidecar_tr=None)
    runs = find_runs(tmp_path, "fsLR")
    assert [r.bold for r in runs] == [(fmriprep,), (xcpd,), (old,), (hcp_like,)]
    assert all(isinstance(r.space, FslrSpace) and r.mask is None for r in runs)
    assert runs[0].confounds is not None and runs[1].confounds is not None
    assert [r.tr for r in runs] == [2.0, 2.0, 2.0, pytest.approx(0.72)]   # the series step when no sidecar says
    assert [r.run for r in runs] == [None, "2", None, None]


def test_cifti_series_step_is_checked_against_the_sidecar(tmp_path):
    describe(tmp_path)
    write_cifti_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, n_frames=3, step=0.8, sidecar_tr=2.0)
    with pytest.raises(BadInputError, match="Repetition times disagree") as err:
        find_runs(tmp_path, "fsLR")
    assert "series step" in str(err.value)


def test_auto_space_takes_the_only_space_and_names_them_all_otherwise(tmp_path):
    describe(tmp_path)
    write_cifti_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, n_frames=3)
    (run,) = find_runs(tmp_path)                                    # data.space=auto, the default
    assert run.space.name == "fsLR"
    left, right = tiny_surface(n_frames=3)
    write_surface_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, left, right)
    with pytest.raises(BadInputError, match="Runs in 2 spaces") as err:
        find_runs(tmp_path)
    assert "space-fsLR (1 CIFTI run(s))" in str(err.value) and "space-fsaverage5 (1 GIFTI run(s))" in str(err.value)
    assert [r.space.name for r in find_runs(tmp_path, "fsaverage5")] == ["fsaverage5"]


def test_cifti_and_gifti_cohort_mixes_are_named(tmp_path):
    describe(tmp_path)
    write_cifti_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, n_frames=3)
    left, right = tiny_surface(n_frames=3)
    write_surface_run(func_dir(tmp_path, "02"), {"sub": "02", "task": "rest"}, left, right)
    with pytest.raises(BadInputError, match="CIFTI and GIFTI runs mixed in one cohort") as err:
        find_runs(tmp_path, "fsLR")
    assert "only GIFTI runs for participant 02" in str(err.value)
    assert [r.subject for r in find_runs(tmp_path, "fsLR", participants=["01"])] == ["01"]


def test_no_runs_in_the_space_names_the_cifti_runs_found(tmp_path):
    describe(tmp_path)
    write_cifti_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, n_frames=3)
    with pytest.raises(BadInputError) as err:
        find_runs(tmp_path, "fsaverage5")
    assert "found space-fsLR_den-91k runs (CIFTI); use data.space=fsLR" in str(err.value)


# --------------------------------------------------------------------------- repetition time
def test_tr_from_each_source(tmp_path):
    left, right = tiny_surface(n_frames=3)
    folder = func_dir(tmp_path, "01")
    json_only = write_surface_run(folder, {"sub": "01", "task": "a"}, left, right, timestep_ms=None, sidecar_tr=0.8)
    gifti_only = write_surface_run(folder, {"sub": "01", "task": "b"}, left, right, timestep_ms=720.0,
                                   sidecar_tr=None)
    assert read_tr(json_only, FS5) == pytest.approx(0.8)
    assert read_tr(gifti_only, FS5) == pytest.approx(0.72)  # TimeStep is in milliseconds
    vol = np.zeros((2, 2, 2, 3))
    sec, _ = write_volume_run(folder, {"sub": "01", "task": "c"}, vol, tr=1.25, sidecar_tr=None)
    msec, _ = write_volume_run(folder, {"sub": "01", "task": "d"}, vol, tr=1250.0, units="msec", sidecar_tr=None)
    assert read_tr((sec,), VOL) == pytest.approx(1.25)
    assert read_tr((msec,), VOL) == pytest.approx(1.25)
    agree, _ = write_volume_run(folder, {"sub": "01", "task": "e"}, vol, tr=2.0, sidecar_tr=2.0005)
    assert read_tr((agree,), VOL) == pytest.approx(2.0005)
    # dataset-level sidecar (BIDS inheritance) when the run has none of its own
    top = write_surface_run(folder, {"sub": "01", "task": "f"}, left, right, timestep_ms=None, sidecar_tr=None)
    (tmp_path / "task-f_bold.json").write_text(json.dumps({"RepetitionTime": 3.0}))
    assert read_tr(top, FS5, tmp_path) == pytest.approx(3.0)


def test_tr_conflict_and_absence_are_errors(tmp_path):
    describe(tmp_path)
    left, right = tiny_surface(n_frames=3)
    folder = func_dir(tmp_path, "01")
    write_surface_run(folder, {"sub": "01", "task": "rest"}, left, right, timestep_ms=2500.0, sidecar_tr=2.0)
    write_volume_run(folder, {"sub": "01", "task": "rest"}, np.zeros((2, 2, 2, 3)), tr=1.0, sidecar_tr=2.0)
    with pytest.raises(BadInputError, match="Repetition times disagree") as err:
        find_runs(tmp_path, "fsaverage5")
    assert "2.5 s" in str(err.value) and "2 s" in str(err.value)
    with pytest.raises(BadInputError, match="Repetition times disagree"):
        find_runs(tmp_path, MNI)
    write_surface_run(func_dir(tmp_path, "02"), {"sub": "02", "task": "rest"}, left, right, timestep_ms=None,
                      sidecar_tr=None)
    with pytest.raises(BadInputErrors) as err:
        find_runs(tmp_path, "fsaverage5")
    assert len(err.value.errors) == 2  # both problems at once
    assert "No repetition time" in str(err.value) and "sub-02_task-rest_hemi-L_space-fsaverage5_bold.json" in str(
        err.value)


# --------------------------------------------------------------------------- user errors
def test_missing_hemisphere_is_named(tmp_path):
    describe(tmp_path)
    left, right = tiny_surface(n_frames=3)
    write_surface_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, left, right)
    next((tmp_path / "sub-01" / "func").glob("*hemi-R*.gii")).unlink()
    with pytest.raises(BadInputError, match="lacks its hemi-R GIFTI"):
        find_runs(tmp_path, "fsaverage5")


def test_unknown_participant_lists_available(tmp_path):
    describe(tmp_path)
    left, right = tiny_surface(n_frames=3)
    for sub in ("01", "02"):
        write_surface_run(func_dir(tmp_path, sub), {"sub": sub, "task": "rest"}, left, right)
    with pytest.raises(BadInputError, match="'07'") as err:
        find_runs(tmp_path, "fsaverage5", participants=["sub-01", "07"])
    assert "01, 02" in str(err.value)


def test_missing_or_non_bids_folder(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        find_runs(tmp_path / "nope", "fsaverage5")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BadInputError, match="not a BIDS dataset"):
        find_runs(tmp_path, "fsaverage5")


def test_no_runs_in_space_names_patterns_and_spaces_found(tmp_path):
    describe(tmp_path)
    write_volume_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, np.zeros((2, 2, 2, 3)))
    with pytest.raises(BadInputError) as err:
        find_runs(tmp_path, "fsaverage5")
    message = str(err.value)
    assert "space-fsaverage5_bold.func.gii" in message and f"use data.space={MNI}" in message
    with pytest.raises(BadInputError, match="Unsupported surface space"):
        find_runs(tmp_path, "fsnative")


def test_requested_participant_without_runs(tmp_path):
    describe(tmp_path)
    left, right = tiny_surface(n_frames=3)
    write_surface_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, left, right)
    (tmp_path / "sub-02" / "anat").mkdir(parents=True)
    with pytest.raises(BadInputError, match="No BOLD runs found for participant 02"):
        find_runs(tmp_path, "fsaverage5", participants=["01", "02"])
    assert len(find_runs(tmp_path, "fsaverage5")) == 1


def test_filters_explain_what_exists(tmp_path):
    describe(tmp_path)
    left, right = tiny_surface(n_frames=3)
    write_surface_run(func_dir(tmp_path, "01", "a"), {"sub": "01", "ses": "a", "task": "rest"}, left, right)
    assert [r.session for r in find_runs(tmp_path, "fsaverage5", participants="sub-01", sessions="a")] == ["a"]
    with pytest.raises(BadInputError, match="only task rest in space-fsaverage5"):
        find_runs(tmp_path, "fsaverage5", task="motor")
    with pytest.raises(BadInputError, match=r"got only session a in space-fsaverage5 \(data.sessions\)"):
        find_runs(tmp_path, "fsaverage5", sessions=["b"])


def test_no_runs_messages_name_every_lead(tmp_path):
    """Other resolutions, other participants' runs and non-BIDS names each get said, with the setting to change."""
    describe(tmp_path)
    data = np.random.default_rng(0).standard_normal((3, 3, 3, 5))
    write_volume_run(func_dir(tmp_path, "01"), {"sub": "01", "task": "rest"}, data, res="1")
    with pytest.raises(BadInputError, match=r"got found space-MNI152NLin2009cAsym_res-1 runs; "
                                            r"use data.space=MNI152NLin2009cAsym:res-1"):
        find_runs(tmp_path, f"{MNI}:res-2")
    func_dir(tmp_path, "02")
    (func_dir(tmp_path, "02") / "rest_run1_bold.nii.gz").write_bytes(b"")   # not a BIDS name
    with pytest.raises(BadInputError) as err:
        find_runs(tmp_path, MNI, participants=["02"])
    message = str(err.value)
    assert "runs of other participants: 01 (participant_label)" in message
    assert "1 image file(s) whose names are not BIDS, e.g. rest_run1_bold.nii.gz" in message
