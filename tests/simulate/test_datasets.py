"""The simulator: exact fMRIPrep names, readable by nilearn, planted answers, determinism."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pavi_parcel.atlas.references import load_yeo
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.simulate import simulate_dataset, simulate_fingerprint_store
from pavi_parcel.simulate.fmri import cosine_basis
from pavi_parcel.simulate.geometry import build_space
from pavi_parcel.simulate.layout import FieldBank, SubjectLayouts, group_layout
from pavi_parcel.simulate.truth import load_truth
from pavi_parcel.stores.fingerprints import FingerprintStore

N_FRAMES = 80
TR = 1.5
MOTION = ["trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z"]


@pytest.fixture(scope="module")
def surface(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    return simulate_dataset(out, n_subjects=3, n_sessions=2, n_frames=N_FRAMES, tr=TR, seed=3, progress=False)


@pytest.fixture(scope="module")
def still(tmp_path_factory):
    """Same cohort without head motion."""
    out = tmp_path_factory.mktemp("still")
    return simulate_dataset(out, n_subjects=3, n_sessions=2, n_frames=N_FRAMES, tr=TR, seed=3,
                            motion_scale=0.0, progress=False)


def _func(ds, sub="01", ses="01") -> Path:
    return ds.bids_dir / f"sub-{sub}" / f"ses-{ses}" / "func"


def _gifti_pair(ds, sub="01", ses="01") -> list[str]:
    stem = f"sub-{sub}_ses-{ses}_task-rest_run-1"
    return [str(_func(ds, sub, ses) / f"{stem}_hemi-{h}_space-fsaverage5_bold.func.gii") for h in "LR"]


def _load_surface(ds, sub="01", ses="01") -> np.ndarray:
    return np.concatenate([np.stack([d.data for d in nib.load(p).darrays]) for p in _gifti_pair(ds, sub, ses)],
                          axis=1)


def test_exact_bids_names(surface):
    root = surface.bids_dir
    assert root.name == "bids" and surface.truth_dir == root.parent / "truth"
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] and description["BIDSVersion"]
    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    assert participants.participant_id.tolist() == ["sub-01", "sub-02", "sub-03"]
    expected = {f"sub-02_ses-02_task-rest_run-1_{suffix}" for suffix in (
        "hemi-L_space-fsaverage5_bold.func.gii", "hemi-R_space-fsaverage5_bold.func.gii",
        "hemi-L_space-fsaverage5_bold.json", "hemi-R_space-fsaverage5_bold.json",
        "desc-confounds_timeseries.tsv", "desc-confounds_timeseries.json")}
    assert {p.name for p in _func(surface, "02", "02").iterdir()} == expected
    assert not list(root.rglob("*truth*")) and not list(root.rglob("*.tmp-*"))


def test_gifti_frames_metadata_and_medial_wall(surface):
    cortex = load_yeo(17).labels > 0
    img = nib.load(_gifti_pair(surface)[0])
    assert len(img.darrays) == N_FRAMES
    first = img.darrays[0]
    assert first.intent == nib.nifti1.intent_codes["NIFTI_INTENT_TIME_SERIES"]
    assert first.data.dtype == np.float32 and first.data.shape == (10242,)
    assert float(first.meta["TimeStep"]) == pytest.approx(1000 * TR)
    assert img.meta["AnatomicalStructurePrimary"] == "CortexLeft"
    data = _load_surface(surface, "03", "02")
    assert np.all(data[:, ~cortex] == 0.0)
    assert np.all(data[:, cortex] > 0.0)


def test_nilearn_reads_the_surface_runs(surface):
    from nilearn.datasets import load_fsaverage
    from nilearn.surface import SurfaceImage

    left, right = _gifti_pair(surface)
    img = SurfaceImage(mesh=load_fsaverage("fsaverage5")["pial"], data={"left": left, "right": right})
    assert img.shape == (20484, N_FRAMES)


def test_sidecars_carry_the_repetition_time(surface):
    for path in _func(surface).glob("*_bold.json"):
        assert json.loads(path.read_text())["RepetitionTime"] == TR


def test_confounds_columns(surface):
    table = pd.read_csv(next(_func(surface).glob("*_desc-confounds_timeseries.tsv")), sep="\t", na_values="n/a")
    assert len(table) == N_FRAMES
    for base in MOTION + ["white_matter", "csf", "global_signal"]:
        for suffix in ("", "_derivative1", "_power2", "_derivative1_power2"):
            assert base + suffix in table
    for name in ("framewise_displacement", "std_dvars", "dvars", "rmsd", "derivative1"):
        column = [c for c in table if c.endswith(name)][0]
        assert np.isnan(table[column].iloc[0]) and table[column].iloc[1:].notna().all()
    assert table["non_steady_state_outlier00"].tolist()[:3] == [1, 0, 0]
    assert table["non_steady_state_outlier01"].tolist()[:3] == [0, 1, 0]
    assert table.filter(like="cosine").shape[1] == int(np.floor(2 * N_FRAMES * TR / 128)) - 1
    data = _load_surface(surface)
    assert data[0].mean() > 1.3 * data[5:].mean()             # dummy scans are bright
    cortex = data[0] > 0
    assert np.allclose(table.global_signal, data[:, cortex].mean(axis=1), rtol=1e-4)


def test_confounds_load_with_nilearn(surface):
    from nilearn.interfaces.fmriprep import load_confounds

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, sample_mask = load_confounds(_gifti_pair(surface, "03", "01"),
                                                strategy=("motion", "wm_csf", "high_pass", "scrub"),
                                                motion="full", wm_csf="basic", scrub=5, fd_threshold=0.5,
                                                std_dvars_threshold=1.5)
        compcor, _ = load_confounds(_gifti_pair(surface), strategy=("high_pass", "compcor"),
                                    compcor="anat_combined", n_compcor=5)
    assert confounds.shape[0] == N_FRAMES
    assert set(MOTION) <= set(confounds.columns) and {"white_matter", "csf"} <= set(confounds.columns)
    assert confounds.filter(like="rot_").shape[1] == 12
    assert not confounds.isna().any().any()
    assert sample_mask is not None and 0 not in sample_mask and 1 not in sample_mask
    assert N_FRAMES // 2 < len(sample_mask) <= N_FRAMES - 2
    assert compcor.filter(like="a_comp_cor").shape[1] == 5


def _highpass_residuals(values: np.ndarray) -> np.ndarray:
    n = values.shape[0]
    basis = np.column_stack([np.ones(n), np.linspace(-1, 1, n), cosine_basis(n, TR)])
    beta, *_ = np.linalg.lstsq(basis, values, rcond=None)
    return values - basis @ beta


def _motion_r2(ds, motion_source, sub, ses) -> float:
    table = pd.read_csv(next(_func(motion_source, sub, ses).glob("*_timeseries.tsv")), sep="\t", na_values="n/a")
    x = _highpass_residuals(table[MOTION].to_numpy()[2:])
    data = np.stack([d.data for d in nib.load(_gifti_pair(ds, sub, ses)[0]).darrays])    # left hemisphere
    y = _highpass_residuals(data[2:, data[0] > 0].astype(np.float64))
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(np.median(1 - ((y - x @ beta) ** 2).sum(0) / (y**2).sum(0)))


def test_injected_motion_is_in_the_data(surface, still):
    runs = [(s, t) for s in ("01", "02", "03") for t in ("01", "02")]
    gains = [_motion_r2(surface, surface, *run) - _motion_r2(still, surface, *run) for run in runs]
    assert min(gains) > 0.03
    assert np.mean(gains) > 0.08
    table = pd.read_csv(next(_func(still).glob("*_timeseries.tsv")), sep="\t", na_values="n/a")
    assert np.all(table[MOTION] == 0)
    outliers = table.filter(like="motion_outlier").to_numpy()
    assert outliers.shape[1] <= 1 and outliers[3:].sum() == 0     # at most the frame after the dummy scans


def test_truth_matches_the_layout(surface):
    truth = load_truth(surface.truth_dir)
    yeo = load_yeo(17)
    assert truth.names == yeo.names and truth.space.name == "fsaverage5" and truth.space.n_total == 20484
    assert np.array_equal(truth.group_labels, yeo.labels)
    assert truth.subjects == ["01", "02", "03"] and truth.sessions == ["01", "02"]
    cortex = yeo.labels > 0
    for labels in truth.subject_labels.values():
        assert np.array_equal(labels > 0, cortex)
        assert np.mean(labels[cortex] != yeo.labels[cortex]) == pytest.approx(0.2, abs=0.005)
    a, b = truth.subject_labels["01"], truth.subject_labels["02"]
    assert 0.1 < np.mean(a[cortex] != b[cortex]) < 0.5            # subjects differ from each other too


@pytest.mark.parametrize("deviation", [0.05, 0.15, 0.35])
def test_subject_deviation_is_controlled(deviation):
    sim = build_space("fsaverage5")
    rng = np.random.default_rng(0)
    group, _ = group_layout(sim, "procedural", 9, rng)
    layouts = SubjectLayouts(sim, group, 9, FieldBank(sim, rng, n_basis=64))
    for _ in range(3):
        labels, fraction = layouts.draw(rng, deviation, n_islands=2)
        assert fraction == pytest.approx(np.mean(labels != group))
        assert fraction == pytest.approx(deviation, abs=0.005)


def test_procedural_surface_layout_is_distributed():
    sim = build_space("fsaverage5")
    labels, names = group_layout(sim, "procedural", 6, np.random.default_rng(1))
    assert names == [f"Network{k:02d}" for k in range(1, 7)]
    for h in (0, 1):
        assert set(np.unique(labels[sim.hemi == h])) == set(range(1, 7))


def test_determinism(tmp_path):
    kwargs = dict(n_subjects=1, n_sessions=1, n_frames=30, n_networks=7, progress=False)
    a = simulate_dataset(tmp_path / "a", seed=5, **kwargs)
    b = simulate_dataset(tmp_path / "b", seed=5, **kwargs)
    c = simulate_dataset(tmp_path / "c", seed=6, **kwargs)
    assert np.array_equal(_load_surface(a), _load_surface(b))
    assert not np.array_equal(_load_surface(a), _load_surface(c))
    conf = [next(_func(d).glob("*.tsv")).read_text() for d in (a, b)]
    assert conf[0] == conf[1]
    # rerunning into the same folder replaces the previous simulation
    again = simulate_dataset(tmp_path / "a", seed=6, **kwargs)
    assert np.array_equal(_load_surface(again), _load_surface(c))


def test_volume_dataset(tmp_path):
    from nilearn.interfaces.fmriprep import load_confounds

    ds = simulate_dataset(tmp_path, n_subjects=1, n_sessions=1, n_frames=40, space="MNI152NLin2009cAsym",
                          n_networks=5, resolution_mm=8, progress=False)
    func = _func(ds)
    stem = "sub-01_ses-01_task-rest_run-1_space-MNI152NLin2009cAsym_res-8"
    bold, mask = func / f"{stem}_desc-preproc_bold.nii.gz", func / f"{stem}_desc-brain_mask.nii.gz"
    img, mask_img = nib.load(bold), nib.load(mask)
    assert img.shape[3] == 40 and img.header.get_zooms() == (8.0, 8.0, 8.0, 2.0)
    truth = load_truth(ds.truth_dir)
    assert truth.space.grid_shape == img.shape[:3] and np.allclose(truth.space.affine, img.affine)
    inside = np.asarray(mask_img.dataobj).ravel() > 0
    assert np.array_equal(inside, truth.group_labels > 0)
    assert set(np.unique(truth.group_labels)) == set(range(6))
    data = np.asarray(img.dataobj).reshape(-1, 40)
    assert np.all(data[~inside] == 0) and np.all(data[inside] > 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        confounds, _ = load_confounds(str(bold), strategy=("motion", "wm_csf", "high_pass"))
    assert confounds.shape[0] == 40


@pytest.mark.parametrize("kwargs, match", [
    (dict(space="fsaverage4"), "space"),
    (dict(layout="yeo", n_networks=9), "Yeo layout"),
    (dict(n_subjects=0), "subjects"),
    (dict(n_frames=10), "frames"),
])
def test_bad_inputs(tmp_path, kwargs, match):
    with pytest.raises(BadInputError, match=match):
        simulate_dataset(tmp_path, progress=False, **{"n_subjects": 1, **kwargs})


def test_refuses_to_overwrite_foreign_folders(tmp_path):
    (tmp_path / "bids").mkdir()
    (tmp_path / "bids" / "precious.txt").write_text("keep me")
    with pytest.raises(BadInputError, match="already holds"):
        simulate_dataset(tmp_path, n_subjects=1, progress=False)
    assert (tmp_path / "bids" / "precious.txt").exists()


def _oracle_ari(store: FingerprintStore, truth) -> list[float]:
    from sklearn.metrics import adjusted_rand_score

    k = truth.n_networks
    averaged = {s: store.read(i).mean(axis=0) for i, s in enumerate(store.subjects)}
    labels = {s: truth.subject_labels[s][store.vertex_index] for s in store.subjects}
    profiles = np.stack([sum(averaged[s][labels[s] == net].mean(0) for s in store.subjects)
                         for net in range(1, k + 1)])
    return [adjusted_rand_score(labels[s], np.argmax(averaged[s] @ profiles.T, axis=1) + 1)
            for s in store.subjects]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp") / "work" / "fingerprints.h5"
    simulate_fingerprint_store(path, n_subjects=3, n_sessions=2, n_networks=7, seed=2, progress=False)
    return path


def test_fingerprint_store_round_trip(store_path):
    truth = load_truth(store_path.parent / "truth")
    assert truth.subjects == ["01", "02", "03"] and truth.settings["seconds_per_subject"] > 0
    with FingerprintStore(store_path) as store:
        assert store.subjects == ["01", "02", "03"] and store.sessions == ["01", "02"]
        assert store.n_vertices == 18715 and 1150 <= store.n_seeds <= 1184
        assert np.array_equal(store.vertex_index, np.flatnonzero(truth.group_labels > 0))
        assert np.all(truth.group_labels[store.seed_index] > 0) and np.all(store.seed_index % 10242 < 642)
        x = store.read(1, np.arange(100))
        assert x.shape == (2, 100, store.n_seeds)
        assert np.allclose(np.linalg.norm(x, axis=-1), 1.0, atol=1e-5)
        assert np.allclose(x.mean(axis=-1), 0.0, atol=1e-6)
        ari = _oracle_ari(store, truth)
    assert 0.6 < np.mean(ari) < 0.97                           # planted, but not trivial


def test_fingerprint_store_is_deterministic_per_entry(store_path, tmp_path):
    """Same seed: the same labels and bits, whatever the cohort size around an entry."""
    truth = simulate_fingerprint_store(tmp_path / "one.h5", n_subjects=1, n_sessions=1, n_networks=7, seed=2,
                                       progress=False)
    cohort = load_truth(store_path.parent / "truth")
    assert np.array_equal(truth.subject_labels["01"], cohort.subject_labels["01"])
    with FingerprintStore(tmp_path / "one.h5") as one, FingerprintStore(store_path) as full:
        assert np.array_equal(one._data[0, 0], full._data[0, 0])
        assert not np.array_equal(full._data[0, 0], full._data[0, 1])


def test_finished_store_is_kept(store_path):
    before = store_path.stat().st_mtime_ns
    truth = simulate_fingerprint_store(store_path, n_subjects=3, n_sessions=2, n_networks=7, seed=2, progress=False)
    assert store_path.stat().st_mtime_ns == before
    assert np.array_equal(truth.subject_labels["03"], load_truth(store_path.parent / "truth").subject_labels["03"])


@pytest.mark.slow
def test_fingerprint_store_parallel_matches_serial(tmp_path):
    kwargs = dict(n_subjects=2, n_sessions=1, n_networks=7, n_seeds=100, seed=4, progress=False)
    simulate_fingerprint_store(tmp_path / "a.h5", **kwargs)
    simulate_fingerprint_store(tmp_path / "b.h5", n_jobs=2, **kwargs)
    with FingerprintStore(tmp_path / "a.h5") as a, FingerprintStore(tmp_path / "b.h5") as b:
        assert a.n_seeds == 100
        assert np.array_equal(a._data[()], b._data[()])
