"""pavi-parcel apply: new participants mapped by the trained model, which stays unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from pavi_parcel.bids.discovery import find_runs
from pavi_parcel.cli import main
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.export.maps import export_maps
from pavi_parcel.fingerprints.new_subjects import subject_fingerprints
from pavi_parcel.inference.fitted_run import load_fitted_run
from pavi_parcel.metrics.scores import adjusted_rand_index
from pavi_parcel.simulate import simulate_dataset
from pavi_parcel.simulate.truth import load_truth
from pavi_parcel.spaces import VolumeSpace
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import read_posterior
from pavi_parcel.workflows.apply import apply_subjects
from tests.bids_validator import EXPECTED_WARNINGS, assert_bids_valid

MNI = "MNI152NLin2009cAsym"
K = 4
TRAIN = ["01", "02", "03"]
FIT_ARGS = ["--space", MNI, "--n-networks", str(K), "--device", "cpu", "seed=2", "fit.max_steps=60",
            "fit.num_threads=1", "fingerprints.seed_spacing_mm=24", "ingest.min_frames=20", "export.report=false",
            "n_jobs=1", "qc.max_mean_fd=1"]  # sub-02 moves 0.66 mm per frame: kept, to test apply against it


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Five simulated subjects on an 8 mm MNI grid; the model is fitted on the first three."""
    root = tmp_path_factory.mktemp("apply")
    sim = simulate_dataset(root / "sim", n_subjects=5, n_sessions=2, n_frames=100, n_networks=K, seed=1,
                           space=MNI, resolution_mm=8, progress=False)
    out = root / "out"
    assert main(["fit", str(sim.bids_dir), str(out), "--participant-label", *TRAIN, *FIT_ARGS]) == 0
    return sim, out


def _snapshot(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and ".lock" != p.name}


def _probseg(folder: Path, label: str) -> np.ndarray:
    return np.asarray(nib.load(str(folder / f"sub-{label}_space-{MNI}_seg-pavi{K}_probseg.nii.gz")).dataobj)


SPACE40 = VolumeSpace("x", (40, 1, 1), np.eye(4))


def test_apply_maps_new_subjects_like_training_ones_and_keeps_the_model(fitted, capsys):
    sim, out = fitted
    before = _snapshot(out)
    assert main(["apply", str(out), str(sim.bids_dir), "--participant-label", "04", "sub-05",
                 "--refine-steps", "2"]) == 0
    assert "sub-04" in capsys.readouterr().out
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of the training run changed
    new = set(after) - set(before)
    assert all(k.startswith(("sub-04/", "sub-05/", "model/applied/", "work/apply/")) for k in new)

    truth, post = load_truth(sim.truth_dir), read_posterior(out / "model" / "posterior.h5")
    reference = sorted(p.name.replace("sub-01", "sub-{}") for p in (out / "sub-01" / "anat").iterdir())
    group_labels = np.argmax(post.group_probs, axis=1)
    for label in ("04", "05"):
        folder = out / f"sub-{label}" / "anat"
        assert sorted(p.name.replace(f"sub-{label}", "sub-{}") for p in folder.iterdir()) == reference
        sidecar = json.loads((folder / f"sub-{label}_space-{MNI}_seg-pavi{K}_dseg.json").read_text())
        trained = json.loads((out / "sub-01" / "anat" / f"sub-01_space-{MNI}_seg-pavi{K}_dseg.json").read_text())
        assert sidecar["LabelMap"] == trained["LabelMap"] and sidecar["Applied"] is True
        probs = _probseg(folder, label).reshape(-1, K)[post.vertex_index]
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        planted = truth.subject_labels[label][post.vertex_index]
        applied = read_posterior(out / "model" / "applied" / f"sub-{label}_posterior.h5")
        ari = adjusted_rand_index(planted, applied.subject_probs[0].argmax(1))
        # well above chance, and individual: closer to the subject's own networks than the group atlas is
        assert ari >= 0.5 and ari > adjusted_rand_index(planted, group_labels) + 0.1, ari

    warnings = assert_bids_valid(out)                    # the derivative with applied subjects stays valid
    assert {w["code"] for w in warnings} <= EXPECTED_WARNINGS, warnings

    # `export maps` re-exports the new subjects with the training ones, to the same bytes
    written = {p.name for p in export_maps(out)}
    assert f"sub-05_space-{MNI}_seg-pavi{K}_probseg.nii.gz" in written
    assert _snapshot(out) == after


def test_new_subject_fingerprints_are_computed_as_in_training(fitted, tmp_path):
    """Fingerprints apply computes for a training participant equal the training store's entries."""
    sim, out = fitted
    run = load_fitted_run(out)
    runs = find_runs(sim.bids_dir, MNI, ["02"])
    items = [(out / "work" / "timeseries" / f"{r.key}.h5", r) for r in runs]
    path = subject_fingerprints("02", items, tmp_path, run.posterior.vertex_index, run.seed_index, run.space,
                                run.top_fraction)
    with FingerprintStore(path) as mine, FingerprintStore(out / "work" / "fingerprints.h5") as train:
        row = train.subjects.index("02")
        np.testing.assert_array_equal(mine.seed_index, train.seed_index)
        np.testing.assert_array_equal(mine.read_packed(0), train.read_packed(row))


def test_seeds_are_recovered_without_the_training_store(fitted, tmp_path):
    _, out = fitted
    copy = tmp_path / "run"
    shutil.copytree(out / "model", copy / "model", ignore=shutil.ignore_patterns("applied"))
    config = yaml.safe_load((copy / "model" / "config.yaml").read_text())
    config.update(out_dir=str(copy), work_dir=None)
    (copy / "model" / "config.yaml").write_text(yaml.safe_dump(config))
    np.testing.assert_array_equal(load_fitted_run(copy).seed_index, load_fitted_run(out).seed_index)
    config["fingerprints"]["seed_spacing_mm"] = 12.0  # other seeds than the model's
    (copy / "model" / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(BadInputError, match="Cannot recover the seeds"):
        load_fitted_run(copy)


def test_refine_steps_zero_is_the_encoders_forward_pass(fitted):
    sim, out = fitted
    done = apply_subjects(out, sim.bids_dir, ["04"], refine_steps=0, export=False)
    probs = read_posterior(done.posteriors[0]).subject_probs[0]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert read_posterior(done.posteriors[0]).attrs["refine_steps"] == 0


def test_a_run_fitted_without_export_is_exported_whole(fitted, tmp_path):
    sim, out = fitted
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("sub-*", "seg-*", "space-*", "applied", "apply"))
    apply_subjects(copy, sim.bids_dir, ["05"])
    assert (copy / f"seg-pavi{K}_dseg.tsv").exists()
    for label in TRAIN + ["05"]:
        assert (copy / f"sub-{label}" / "anat" / f"sub-{label}_space-{MNI}_seg-pavi{K}_dseg.nii.gz").exists()


def _shifted_copy(bids: Path, dest: Path, label: str) -> Path:
    """A dataset holding one participant whose volumes sit on a grid shifted by 3 mm."""
    shutil.copytree(bids / f"sub-{label}", dest / f"sub-{label}")
    shutil.copy(bids / "dataset_description.json", dest)
    for path in (dest / f"sub-{label}").rglob("*.nii.gz"):
        img = nib.load(str(path))
        affine = img.affine.copy()
        affine[:3, 3] += 3.0
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), affine, img.header), str(path))
    return dest


@pytest.mark.parametrize("case,needle", [
    ("not_fitted", "is not a fitted run"),
    ("trained", "in the training set"),
    ("unknown", "Unknown participant"),
    ("none", "No participant"),
    ("refine", "--refine-steps"),
    ("grid", "another voxel grid"),
    ("swapped", "wrong order"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(fitted, tmp_path, capsys, case, needle):
    sim, out = fitted
    bids, labels, extra = str(sim.bids_dir), ["--participant-label", "05"], []
    target = str(out)
    if case == "not_fitted":
        (tmp_path / "empty").mkdir()
        target = str(tmp_path / "empty")
    elif case == "trained":
        labels = ["--participant-label", "05", "sub-02"]
    elif case == "unknown":
        labels = ["--participant-label", "99"]
    elif case == "none":
        labels = []
    elif case == "refine":
        extra = ["--refine-steps", "-1"]
    elif case == "grid":
        bids = str(_shifted_copy(sim.bids_dir, tmp_path / "shifted", "05"))
    elif case == "swapped":
        target, bids = bids, target
    before = _snapshot(out)
    code = main(["apply", target, bids, *labels, *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err and "Fix:" in err, err
    assert _snapshot(out) == before


def test_fitted_vertices_or_seeds_a_new_run_lacks(tmp_path):
    """A missing fitted vertex gets no evidence (zero row), a missing seed is never a top seed."""
    from pavi_parcel.bids.discovery import BoldRun
    from pavi_parcel.fingerprints.new_subjects import session_correlations
    from pavi_parcel.fingerprints.split import Segment
    from pavi_parcel.stores.timeseries import write_run_timeseries

    rng = np.random.default_rng(0)
    vertex_index, seeds = np.arange(0, 40, 2), np.arange(0, 40, 4)  # 20 fitted vertices, 10 seeds
    have = np.setdiff1d(np.arange(40), [2, 8])  # the run lacks vertex 2 and vertex-and-seed 8
    data = rng.standard_normal((50, have.size)).astype(np.float32)
    path = tmp_path / "sub-11_task-rest.h5"
    write_run_timeseries(path, data, have, {"n_total": 40, "fingerprint": "x"})
    corr, present = session_correlations([Segment(path)], vertex_index, seeds)
    assert present.tolist() == [v not in (2, 8) for v in vertex_index]
    assert np.isnan(corr[:, 2]).all() and not np.isnan(np.delete(corr, 2, axis=1)).any()
    col = {v: i for i, v in enumerate(have)}
    assert corr[2, 3] == pytest.approx(np.corrcoef(data[:, col[4]], data[:, col[12]])[0, 1], abs=1e-5)

    run = BoldRun("11", None, "rest", None, "fsaverage5", (path, path), None, None, 2.0)
    store_path = subject_fingerprints("11", [(path, run)], tmp_path, vertex_index, seeds, SPACE40,
                                      0.2)
    with FingerprintStore(store_path) as store:
        bits = np.unpackbits(store.read_packed(0), axis=-1, count=10)[0]
    assert bits[~present].sum() == 0 and np.all(bits[present].sum(1) == 2) and bits[:, 2].sum() == 0

    write_run_timeseries(path, data[:, :10], have[:10], {"n_total": 40, "fingerprint": "y"})
    with pytest.raises(BadInputError, match="covers too few of the fitted vertices"):
        subject_fingerprints("11", [(path, run)], tmp_path / "b", vertex_index, seeds, SPACE40,
                             0.2)
