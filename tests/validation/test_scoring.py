"""Validation metrics of a fitted run: planted truth, session reliability, held-out data."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from pavi_parcel.cli import main
from pavi_parcel.export.report import _metrics_section
from pavi_parcel.inference.training import fit_model
from pavi_parcel.metrics.scores import heldout_log_likelihood, within_between_dice
from pavi_parcel.settings.schema import FitSettings, ModelSettings
from pavi_parcel.simulate import simulate_dataset
from pavi_parcel.simulate.truth import Truth, write_truth
from pavi_parcel.spaces import FsaverageSpace
from pavi_parcel.stores.posterior import Posterior, write_posterior
from pavi_parcel.validation.scoring import truth_metrics
from tests.builders import SMALL_FIT

SPACE = FsaverageSpace("fsaverage5")


def _planted(n_vertices=300, k=3, seed=0, confidence=0.9):
    """Truth labels and a posterior whose networks are a permutation of them, with known accuracy."""
    rng = np.random.default_rng(seed)
    vertex_index = np.arange(n_vertices) * 2
    truth_labels = {}
    probs = []
    permutation = np.array([2, 0, 1])  # model network l = truth network permutation[l]
    for subject in ("01", "02"):
        full = np.zeros(20484, np.int16)
        labels = rng.integers(0, k, n_vertices)
        full[vertex_index] = labels + 1
        truth_labels[subject] = full
        # calibrated draws: the top label is right with probability `confidence`
        right = rng.random(n_vertices) < confidence
        top = np.where(right, labels, (labels + 1) % k)
        p = np.full((n_vertices, k), (1 - confidence) / (k - 1))
        p[np.arange(n_vertices), top] = confidence
        probs.append(p[:, permutation])
    truth = Truth(group_labels=truth_labels["01"], subject_labels=truth_labels, names=["A", "B", "C"], space=SPACE)
    probs = np.stack(probs).astype(np.float32)
    post = Posterior(probs, probs.mean(0), np.zeros((k, 4)), ["01", "02"], ["1"], vertex_index, SPACE, {})
    return post, truth


def test_truth_metrics_see_through_label_permutation():
    post, truth = _planted(confidence=0.9)
    table = truth_metrics(post, truth)
    assert table["accuracy"].between(0.85, 0.95).all()
    assert (table["ece"] < 0.05).all()  # calibrated by construction
    assert (table["confidence"] - 0.9).abs().max() < 1e-6


def test_overconfident_maps_have_a_large_calibration_error():
    post, truth = _planted(confidence=0.9)
    sharp = np.eye(3, dtype=np.float32)[post.subject_probs.argmax(2)]
    post.subject_probs = sharp
    table = truth_metrics(post, truth)
    assert (table["ece"] > 0.07).all()


def test_validate_command_writes_metrics(tmp_path):
    post, truth = _planted()
    write_posterior(tmp_path / "out" / "model" / "posterior.h5", post)
    truth_dir = tmp_path / "truth"
    write_truth(truth_dir, truth)
    assert main(["validate", str(tmp_path / "out"), "--truth", str(truth_dir)]) == 0
    table = pd.read_csv(tmp_path / "out" / "model" / "metrics.tsv", sep="\t")
    assert table["subject"].astype(str).tolist()[-1] == "mean" and len(table) == 3
    assert {"ari", "dice", "ece", "group_ari"} <= set(table.columns)


def test_validate_without_reference_is_a_usage_error(tmp_path, capsys):
    post, _ = _planted()
    write_posterior(tmp_path / "model" / "posterior.h5", post)
    assert main(["validate", str(tmp_path)]) == 2
    assert "--truth" in capsys.readouterr().err


# --------------------------------------------------------------------------- without truth
def test_within_subject_dice_beats_between_subject_dice_for_individual_maps():
    rng = np.random.default_rng(0)
    group = rng.integers(0, 4, 400)
    sessions = []
    for _ in range(5):  # each subject: 40 % of vertices moved; its two sessions differ in 5 %
        own = np.where(rng.random(400) < 0.4, rng.integers(0, 4, 400), group)
        sessions.append(np.stack([np.where(rng.random(400) < 0.05, rng.integers(0, 4, 400), own) for _ in range(2)]))
    within, between = within_between_dice(sessions + [sessions[0][:1]], 4)
    assert np.all(within[:5] > 0.9) and np.all(between < 0.8) and np.all(within[:5] > between[:5] + 0.15)
    assert np.isnan(within[5])  # one session: no within-subject Dice
    same = within_between_dice([np.stack([group, group])] * 3, 4)
    np.testing.assert_allclose(np.concatenate(same), 1.0)  # identical maps everywhere


def test_heldout_log_likelihood_prefers_the_right_labels():
    loglik = np.array([[0.0, -10.0], [-10.0, 0.0], [0.0, -10.0]])
    right = np.eye(2)[[0, 1, 0]]
    expected, predictive = heldout_log_likelihood(right, loglik)
    assert expected == pytest.approx(0.0) and predictive == pytest.approx(0.0)
    flat = heldout_log_likelihood(np.full((3, 2), 0.5), loglik)
    assert flat[0] == pytest.approx(-5.0) and flat[1] == pytest.approx(np.log(0.5 + 0.5 * np.exp(-10)))
    wrong = heldout_log_likelihood(np.eye(2)[[1, 0, 1]], loglik)
    assert wrong == pytest.approx((-10.0, -10.0))  # confident and wrong: the whole likelihood gap
    hedged = heldout_log_likelihood(np.array([[0.1, 0.9], [0.9, 0.1], [0.1, 0.9]]), loglik)
    assert hedged[1] > wrong[1] and hedged[1] >= hedged[0]  # the predictive score rewards hedging (Jensen)


@pytest.fixture(scope="module")
def session_fit(tmp_path_factory, planted_store):
    """Six planted subjects deviating from the group, two sessions, fitted by PAVI-E (no pipeline)."""
    out = tmp_path_factory.mktemp("sessions") / "out"
    store, data = planted_store(6, seed=11, path=out / "work" / "fingerprints.h5", deviation=0.5)
    fit = FitSettings(**SMALL_FIT, num_threads=1)
    fit_model(store, out / "model", ModelSettings(n_networks=4), fit, seed=0, device="cpu")
    return out, data


def test_session_maps_are_reliable_and_predict_the_left_out_session(session_fit):
    out, data = session_fit
    assert main(["validate", str(out)]) == 0
    table = pd.read_csv(out / "model" / "metrics.tsv", sep="\t", dtype={"subject": str})
    subjects = table[table["subject"] != "mean"]
    assert len(subjects) == 6 and (subjects["n_sessions"] == 2).all() and (subjects["source"] == "fit").all()
    # planted: subjects deviate from the group, so their own sessions agree more than two subjects do
    assert (subjects["within_dice"] > subjects["between_dice"] + 0.2).all()
    _, planted_between = within_between_dice([labels[None] for labels in data.labels], 4)
    assert abs(subjects["between_dice"].mean() - planted_between.mean()) < 0.1
    # the map of the other session predicts the left-out session better than the group atlas does
    assert (subjects["heldout_loglik"] > subjects["group_heldout_loglik"]).all()
    assert (subjects["heldout_pred_loglik"] > subjects["group_heldout_pred_loglik"]).all()
    assert (subjects["loglik_data"] == "leave-one-session-out").all()
    mean = table[table["subject"] == "mean"].iloc[0]
    assert mean["within_dice"] == pytest.approx(subjects["within_dice"].mean(), abs=1e-3)
    html = _metrics_section(out)
    assert "Within- vs between-subject Dice" in html and "heldout_pred_loglik" in html


MNI = "MNI152NLin2009cAsym"
FIT_ARGS = ["--space", MNI, "--n-networks", "3", "--device", "cpu", "seed=2", "fit.max_steps=20", "fit.num_threads=1",
            "fingerprints.seed_spacing_mm=24", "ingest.min_frames=20", "export.report=false", "n_jobs=1",
            "data.sessions=['01']"]


@pytest.fixture(scope="module")
def bids_fit(tmp_path_factory):
    """Three simulated subjects, two sessions: 01 and 02 fitted on session 01, 03 added by apply."""
    root = tmp_path_factory.mktemp("heldout")
    sim = simulate_dataset(root / "sim", n_subjects=3, n_sessions=2, n_frames=50, n_networks=3, seed=1, space=MNI,
                           resolution_mm=8, progress=False)
    out = root / "out"
    assert main(["fit", str(sim.bids_dir), str(out), "--participant-label", "01", "02", *FIT_ARGS]) == 0
    assert main(["apply", str(out), str(sim.bids_dir), "--participant-label", "03"]) == 0
    return sim, out


def test_heldout_sessions_score_fitted_and_applied_subjects(bids_fit):
    sim, out = bids_fit
    assert main(["validate", str(out), "--heldout", str(sim.bids_dir)]) == 0
    table = pd.read_csv(out / "model" / "metrics.tsv", sep="\t", dtype={"subject": str})
    assert table["subject"].tolist() == ["01", "02", "03", "mean"]
    assert table["source"].fillna("").tolist() == ["fit", "fit", "apply", ""]
    columns = ["homogeneity", "group_homogeneity", "heldout_loglik", "group_heldout_loglik", "heldout_pred_loglik"]
    assert np.isfinite(table[columns].to_numpy()).all()
    assert (table["loglik_data"] == "heldout-runs").all()
    assert table["within_dice"].isna().all()  # one training session each: no within-subject Dice
    # only the session the model never saw was ingested for validation
    ingested = sorted(p.name for p in (out / "work" / "validate" / "timeseries").glob("*.h5"))
    assert ingested and all("_ses-02_" in name for name in ingested)


def test_heldout_without_the_fitted_participants_is_a_usage_error(bids_fit, tmp_path, capsys):
    _, out = bids_fit
    other = tmp_path / "other"
    (other / "sub-99" / "func").mkdir(parents=True)
    (other / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.8.0"}')
    assert main(["validate", str(out), "--heldout", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "No held-out data of the fitted participants" in err and "sub-99" in err and len(err.splitlines()) == 1


def test_heldout_runs_that_were_fitted_are_refused(bids_fit, tmp_path, capsys):
    sim, out = bids_fit
    same = tmp_path / "same"
    shutil.copytree(sim.bids_dir / "sub-01" / "ses-01", same / "sub-01" / "ses-01")  # copy2 keeps the stamps
    shutil.copy2(sim.bids_dir / "dataset_description.json", same / "dataset_description.json")
    assert main(["validate", str(out), "--heldout", str(same)]) == 2
    assert "was used for fitting" in capsys.readouterr().err
