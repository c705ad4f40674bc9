"""Validation metrics of a fitted run against planted truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pavi_parcel.cli import main
from pavi_parcel.sim_layout import Truth, write_truth
from pavi_parcel.store import Posterior, SpaceInfo, write_posterior
from pavi_parcel.validation import truth_metrics, validate_run

SPACE = SpaceInfo("fsaverage5", 20484)


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
