"""Atlas priors (--prior): loading, bad input, calibration, and a planted single-subject fit."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from pavi_parcel.atlas.priors import initial_profiles, load_prior, prior_for_store, prior_n_networks, prior_problems
from pavi_parcel.atlas.references import YEO7_NAMES, YEO17_NAMES, load_yeo
from pavi_parcel.cli import main
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.inference.calibration import prior_temperature
from pavi_parcel.metrics.scores import adjusted_rand_index
from pavi_parcel.settings.schema import FitSettings, ModelSettings
from pavi_parcel.spaces import FsaverageSpace, VolumeSpace
from pavi_parcel.workflows.api import prior_overrides

FSAVERAGE5 = FsaverageSpace("fsaverage5")
N_HEMI = 10242


def _cortex() -> np.ndarray:
    return np.flatnonzero(load_yeo(7).labels > 0)


def _write_label_pair(folder, values: np.ndarray, names: list[str], stem: str = "atlas") -> str:
    """A GIFTI .label.gii pair; ``values`` of shape (2 * n,) with labels 0..K."""
    for h, part in zip("LR", np.split(values, 2)):
        table = nib.gifti.GiftiLabelTable()
        for key, name in enumerate(["Unknown"] + names):
            lab = nib.gifti.GiftiLabel(key=key, red=key / 10, green=0.5, blue=0.2, alpha=1.0)
            lab.label = name
            table.labels.append(lab)
        img = nib.gifti.GiftiImage(labeltable=table)
        img.add_gifti_data_array(nib.gifti.GiftiDataArray(part.astype(np.int32), intent="NIFTI_INTENT_LABEL",
                                                          datatype="NIFTI_TYPE_INT32"))
        nib.save(img, folder / f"{stem}_hemi-{h}_dseg.label.gii")
    return str(folder / f"{stem}_hemi-L_dseg.label.gii")


def _write_probseg_pair(folder, probs: np.ndarray, names: list[str]) -> str:
    """A .func.gii probseg pair (K arrays per hemisphere) with a LabelMap sidecar."""
    for h, part in zip("LR", np.split(probs, 2)):
        img = nib.gifti.GiftiImage()
        for k in range(part.shape[1]):
            img.add_gifti_data_array(nib.gifti.GiftiDataArray(part[:, k].astype(np.float32),
                                                              datatype="NIFTI_TYPE_FLOAT32"))
        stem = f"hemi-{h}_space-fsaverage5_seg-big_probseg"
        nib.save(img, folder / f"{stem}.func.gii")
        (folder / f"{stem}.json").write_text(json.dumps({"LabelMap": {str(i + 1): n for i, n in enumerate(names)}}))
    return str(folder / "hemi-L_space-fsaverage5_seg-big_probseg.func.gii")


# --------------------------------------------------------------------------- loading
@pytest.mark.parametrize("k, names", [(7, YEO7_NAMES), (17, YEO17_NAMES)])
def test_yeo_prior_on_fsaverage5_store_vertices(k, names):
    idx = _cortex()
    prior = load_prior(f"yeo{k}", FSAVERAGE5, idx, floor=0.2)
    assert prior.probs.shape == (idx.size, k) and prior.names == names and prior.kind == "dseg"
    np.testing.assert_allclose(prior.probs.sum(1), 1.0)
    np.testing.assert_array_equal(prior.labels, load_yeo(k).labels[idx] - 1)  # atlas order, no reshuffle
    np.testing.assert_allclose(prior.probs.max(1), 0.8 + 0.2 / k)
    assert prior_n_networks(f"YEO{k}") == k


def test_medial_wall_vertices_get_a_uniform_prior():
    wall = np.flatnonzero(load_yeo(7).labels == 0)[:5]
    prior = load_prior("yeo7", FSAVERAGE5, np.concatenate([wall, _cortex()[:5]]))
    np.testing.assert_allclose(prior.probs[:5], 1 / 7)


def test_dseg_path_prior_with_its_label_table(tmp_path):
    values = np.zeros(2 * N_HEMI, dtype=int)
    values[:N_HEMI // 2], values[N_HEMI // 2:N_HEMI], values[N_HEMI:] = 5, 9, 2  # renumbered 2->1, 5->2, 9->3
    spec = _write_label_pair(tmp_path, values, [f"N{i}" for i in range(1, 10)])
    prior = load_prior(spec, FSAVERAGE5, np.array([0, N_HEMI - 1, N_HEMI]), floor=0.1)
    assert prior.names == ["N2", "N5", "N9"]
    np.testing.assert_array_equal(prior.labels, [1, 2, 0])
    np.testing.assert_allclose(prior.probs.max(1), 0.9 + 0.1 / 3)


def test_probseg_path_prior_keeps_probabilities_and_sidecar_names(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=2 * N_HEMI)
    probs[5] = 0.0  # an unlabelled vertex
    spec = _write_probseg_pair(tmp_path, probs, ["A", "B", "C", "D"])
    prior = load_prior(spec, FSAVERAGE5, np.arange(10), floor=0.5)  # the floor is for dsegs only
    assert prior.kind == "probseg" and prior.names == ["A", "B", "C", "D"]
    np.testing.assert_allclose(prior.probs[[0, 1, 2]], np.clip(probs[[0, 1, 2]], 1e-3, None)
                               / np.clip(probs[[0, 1, 2]], 1e-3, None).sum(1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(prior.probs[5], 0.25)
    assert prior_n_networks(spec) == 4
    assert prior_problems(spec, 4, FSAVERAGE5, "pavi_e") == []


def test_volume_probseg_and_dseg_priors(tmp_path):
    grid, affine = (4, 4, 4), np.eye(4)
    space = VolumeSpace("MNI152NLin2009cAsym", grid, affine)
    probs = np.random.default_rng(1).dirichlet(np.ones(3), size=64).reshape(*grid, 3)
    nib.save(nib.Nifti1Image(probs.astype(np.float32), affine), tmp_path / "atlas_probseg.nii.gz")
    prior = load_prior(tmp_path / "atlas_probseg.nii.gz", space, np.arange(0, 64, 2))
    np.testing.assert_allclose(prior.probs, probs.reshape(64, 3)[::2], rtol=1e-4, atol=1e-3)
    labels = probs.argmax(-1) + 1
    nib.save(nib.Nifti1Image(labels.astype(np.int16), affine), tmp_path / "atlas_dseg.nii.gz")
    (tmp_path / "atlas_dseg.tsv").write_text("index\tname\n1\tx\n2\ty\n3\tz\n")
    hard = load_prior(tmp_path / "atlas_dseg.nii.gz", space, np.arange(64))
    assert hard.names == ["x", "y", "z"] and hard.kind == "dseg"
    np.testing.assert_array_equal(hard.labels, labels.reshape(-1) - 1)


# --------------------------------------------------------------------------- bad input
def test_bad_prior_specs_are_bad_input(tmp_path):
    volume = VolumeSpace("MNI152NLin2009cAsym", (4, 4, 4), np.eye(4))

    def message(spec, k=7, surface=True, method="pavi_e", floor=0.2):
        return " | ".join(str(e) for e in prior_problems(spec, k, FSAVERAGE5 if surface else volume, method, floor))

    assert prior_problems(None, 7, FSAVERAGE5, "pavi_e") == []
    assert "Unknown Yeo 2011 atlas" in message("yeo9")
    assert "not found" in message(str(tmp_path / "missing_hemi-L.label.gii"))
    assert "does not match the atlas prior" in message("yeo17", k=7) and "model.n_networks=17" in message("yeo17", k=7)
    assert "does not fit the input space" in message("yeo7", surface=False)
    assert "vbem does not use an atlas prior" in message("yeo7", method="vbem")
    assert "prior_floor" in message("yeo7", floor=1.0)
    short = np.ones(2 * 5000, dtype=int)
    for h, part in zip("LR", np.split(short, 2)):  # a mesh that is not fsaverage
        img = nib.gifti.GiftiImage()
        img.add_gifti_data_array(nib.gifti.GiftiDataArray(part.astype(np.int32), intent="NIFTI_INTENT_LABEL",
                                                          datatype="NIFTI_TYPE_INT32"))
        nib.save(img, tmp_path / f"small_hemi-{h}.label.gii")
    assert "not on an fsaverage mesh" in message(str(tmp_path / "small_hemi-L.label.gii"))
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), tmp_path / "vol.nii.gz")
    with pytest.raises(BadInputError, match="does not fit the fsaverage5 space"):
        load_prior(tmp_path / "vol.nii.gz", FSAVERAGE5, np.arange(3))


def test_cli_prior_sets_k_and_rejects_another(tmp_path, capsys):
    assert prior_overrides("yeo17", None) == ["model.prior=yeo17", "model.n_networks=17"]
    assert prior_overrides("yeo7", 7) == ["model.prior=yeo7"]
    assert prior_overrides("nonsense", None) == ["model.prior=nonsense"]  # reported by the validation pass
    (tmp_path / "bids").mkdir()
    code = main(["fit", str(tmp_path / "bids"), str(tmp_path / "out"), "--prior", "yeo7", "--n-networks", "17"])
    assert code == 2
    assert "does not match the atlas prior yeo7" in capsys.readouterr().err and not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- model pieces
def test_initial_profiles_follow_the_atlas_order():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    centres = np.eye(3, 6)
    xbar = centres[labels] + 0.1 * rng.normal(size=(60, 6))
    xbar /= np.linalg.norm(xbar, axis=1, keepdims=True)
    probs = 0.8 * np.eye(3)[labels] + 0.2 / 3
    got, mu = initial_profiles(xbar, probs)
    np.testing.assert_array_equal(got, labels)
    assert np.all(np.argmax(mu @ centres.T, axis=1) == [0, 1, 2])


@pytest.mark.parametrize("floor", [0.1, 0.2])
def test_prior_temperature_recovers_an_overstated_evidence_scale(floor):
    """Planted: a calibrated log-likelihood inflated 10x; the atlas brings it back (no truth used)."""
    rng = np.random.default_rng(0)
    n, k = 20000, 7
    atlas = rng.integers(k, size=n)
    prior = (1 - floor) * np.eye(k)[atlas] + floor / k
    y = (prior.cumsum(1) > rng.random((n, 1))).argmax(1)
    obs = np.eye(k)[y] + rng.normal(size=(n, k))
    loglik = -0.5 * ((obs[:, None, :] - np.eye(k)[None]) ** 2).sum(-1)
    assert prior_temperature(10.0 * loglik, prior) == pytest.approx(0.1, rel=0.1)


# --------------------------------------------------------------------------- planted single-subject fit
@pytest.fixture(scope="module")
def single_subject(tmp_path_factory):
    from pavi_parcel.simulate import simulate_fingerprint_store

    path = tmp_path_factory.mktemp("prior") / "fingerprints.h5"
    truth = simulate_fingerprint_store(path, n_subjects=1, n_sessions=1, n_networks=7, seed=3, n_seeds=100,
                                       layout="yeo", snr=1.5, progress=False)
    return path, truth


def test_single_subject_prior_beats_no_prior_and_is_named_after_the_atlas(single_subject, tmp_path):
    from pavi_parcel.atlas.naming import read_label_table
    from pavi_parcel.export.maps import export_maps
    from pavi_parcel.inference.training import fit_model
    from pavi_parcel.stores.fingerprints import FingerprintStore
    from pavi_parcel.stores.posterior import read_posterior

    path, truth = single_subject
    fit = FitSettings(max_steps=30, num_threads=1, min_epochs=2)
    aris = {}
    for prior in (None, "yeo7"):
        out = tmp_path / str(prior)
        post = read_posterior(fit_model(path, out / "model", ModelSettings(n_networks=7, prior=prior), fit, seed=0,
                                        device="cpu"))
        true = truth.subject_labels["01"][post.vertex_index] - 1
        aris[prior] = adjusted_rand_index(post.subject_probs[0].argmax(1), true)
    atlas_ari = adjusted_rand_index(load_yeo(7).labels[post.vertex_index] - 1, true)
    assert aris["yeo7"] > aris[None] + 0.1 and aris["yeo7"] > atlas_ari + 0.05
    assert post.attrs["calibration"]["method"] == "prior"  # one session: calibrated against the atlas

    out = tmp_path / "yeo7"
    export_maps(out)
    table = read_label_table(out / "seg-pavi7_dseg.tsv")
    assert table.names == YEO7_NAMES and list(table.order) == list(range(7))
    label_gii = nib.load(out / "sub-01" / "anat" / "sub-01_hemi-L_space-fsaverage5_seg-pavi7_dseg.label.gii")
    assert [lab.label for lab in label_gii.labeltable.labels][1:] == YEO7_NAMES
    # the exported group probseg is itself a usable prior (priors from a larger cohort)
    group = out / "group" / "hemi-L_space-fsaverage5_seg-pavi7_probseg.func.gii"
    with FingerprintStore(path) as store:
        again = prior_for_store(ModelSettings(prior=str(group), n_networks=7), store)
        assert again.kind == "probseg" and again.names == YEO7_NAMES
        with pytest.raises(BadInputError, match="does not match the atlas prior"):
            prior_for_store(ModelSettings(prior="yeo17", n_networks=7), store)
