"""Connectomes between the networks: time series from the maps, group-sparse partial correlations, files, stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pavi_parcel.cli import main
from pavi_parcel.connectome.estimate import correlation_matrix, group_sparse_connectomes, individual_sparse_partial
from pavi_parcel.connectome.files import read_relmat, write_relmat, write_timeseries
from pavi_parcel.connectome.timeseries import network_weights, run_network_timeseries
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.metrics.graphs import edge_auc, edge_correlation, edge_f1, partial_from_precision
from pavi_parcel.simulate import simulate_dataset
from pavi_parcel.simulate.graph import covariance_factor, load_planted_graph, planted_group_precision, subject_precision
from pavi_parcel.stores.timeseries import RunTimeSeries


def _planted_cohort(n_subjects: int, k: int, n_frames: int, seed: int = 0):
    """Samples from planted sparse precisions sharing one support: (series per subject, group precision, subjects')."""
    rng = np.random.default_rng(seed)
    group = planted_group_precision(k, 0.3, rng)
    precisions = [subject_precision(group, rng) for _ in range(n_subjects)]
    series = [rng.standard_normal((n_frames, k)) @ covariance_factor(p).T.astype(np.float64) for p in precisions]
    return series, group, precisions


def test_planted_precision_is_sparse_connected_and_shared_by_subjects():
    rng = np.random.default_rng(1)
    group = planted_group_precision(12, 0.25, rng)
    edges = np.abs(group) > 0
    np.fill_diagonal(edges, False)
    assert np.allclose(group, group.T) and np.linalg.eigvalsh(group)[0] > 0.2
    assert edges.any(axis=1).all()                                  # no isolated network
    assert 0.2 < edges[np.triu_indices(12, 1)].mean() < 0.35
    subject = subject_precision(group, rng)
    assert np.array_equal(np.abs(subject - np.diag(np.diag(subject))) > 0, edges)   # same support
    assert not np.allclose(subject, group)


def test_network_timeseries_recover_the_signal_of_each_network():
    rng = np.random.default_rng(0)
    k, n_frames, per = 4, 120, 50
    truth = rng.standard_normal((n_frames, k))
    labels = np.repeat(np.arange(k), per)
    data = truth[:, labels] + 0.8 * rng.standard_normal((n_frames, labels.size))
    probs = np.full((labels.size, k), 0.1 / (k - 1))
    probs[np.arange(labels.size), labels] = 0.9
    run = RunTimeSeries(data.astype(np.float32), np.arange(labels.size) * 2, {})
    vertex_index = np.arange(labels.size + 10) * 2                  # 10 fitted vertices the run lacks
    weights = np.vstack([probs, np.full((10, k), 1.0 / k)])
    for weighting in ("soft", "hard"):
        series = run_network_timeseries(run, vertex_index, network_weights(weights, weighting))
        assert series.shape == (n_frames, k)
        r = [np.corrcoef(series[:, i], truth[:, i])[0, 1] for i in range(k)]
        assert min(r) > (0.98 if weighting == "hard" else 0.9)
    hard = network_weights(np.array([[0.6, 0.4], [0.7, 0.3]]), "hard")
    assert np.allclose(hard[:, 1], [0.4, 0.3])                      # a network argmax never picks keeps soft weights
    with pytest.raises(BadInputError):
        network_weights(probs, "median")


def test_population_prior_recovers_the_planted_graph_better_than_one_subject_alone():
    series, group, precisions = _planted_cohort(n_subjects=10, k=8, n_frames=150)
    cohort = group_sparse_connectomes(series)
    planted_edges = np.abs(group) > 0
    np.fill_diagonal(planted_edges, False)
    assert cohort.partial.shape == (10, 8, 8)
    assert np.allclose(cohort.partial, np.swapaxes(cohort.partial, 1, 2))
    # one edge set for the cohort: every subject's zeros in the same place
    support = np.abs(cohort.precision) > 0
    assert (support == support[0]).all()
    with_prior = [edge_correlation(cohort.partial[i], partial_from_precision(p)) for i, p in enumerate(precisions)]
    alone = [edge_correlation(individual_sparse_partial(x), partial_from_precision(p))
             for x, p in zip(series, precisions)]
    assert np.mean(with_prior) > 0.85
    assert np.mean(with_prior) > np.mean(alone)
    # the planted edges are the strongest partial correlations; the cross-validated penalty keeps
    # some weak false edges as well (it picks for held-out likelihood, not for sparsity)
    ranks = [edge_auc(p, planted_edges) for p in cohort.partial]
    assert np.mean(ranks) > 0.95
    assert np.mean(ranks) >= np.mean([edge_auc(individual_sparse_partial(x), planted_edges) for x in series])
    assert edge_f1(cohort.edges, planted_edges) > 0.45
    with pytest.raises(BadInputError, match="at least 2 subjects"):
        group_sparse_connectomes(series[:1])


def test_connectome_files_load_in_pandas_by_network_name(tmp_path):
    names = ["Visual", "Somatomotor", "Default"]
    matrix = correlation_matrix(np.random.default_rng(0).standard_normal((50, 3)))
    path = tmp_path / "sub-01_space-fsLR_seg-pavi3_den-91k_stat-pearsoncorrelation_relmat.tsv"
    write_relmat(path, matrix, names, {"Description": "test"})
    frame = pd.read_csv(path, sep="\t", index_col="Node")
    assert list(frame.columns) == names and list(frame.index) == names
    assert np.allclose(frame.loc["Visual", "Default"], matrix[0, 2], atol=1e-5)
    assert read_relmat(path)[1] == names
    assert json.loads(path.with_suffix(".json").read_text())["Description"] == "test"
    series = tmp_path / "sub-01_task-rest_space-fsLR_seg-pavi3_den-91k_stat-mean_timeseries.tsv"
    write_timeseries(series, np.arange(12.0).reshape(4, 3), names, {})
    assert pd.read_csv(series, sep="\t").shape == (4, 3)


@pytest.mark.slow
def test_connectome_stage_writes_xcpd_named_files_resumes_and_scores_the_planted_graph(tmp_path):
    k = 5
    sim = simulate_dataset(tmp_path / "sim", n_subjects=4, n_sessions=2, n_frames=150, n_networks=k, seed=2,
                           graph_density=0.4, progress=False)
    graph = load_planted_graph(sim.truth_dir)
    assert graph.subject_precision.shape == (4, k, k) and graph.subjects == sim.subjects
    out = tmp_path / "out"
    assert main(["fit", str(sim.bids_dir), str(out), "--n-networks", str(k), "--device", "cpu", "n_jobs=1",
                 "fit.max_minutes=1", "export.report=false"]) == 0
    stem = f"space-fsaverage5_seg-pavi{k}"
    run_file = out / "sub-01" / "ses-01" / "func" / f"sub-01_ses-01_task-rest_run-1_{stem}_stat-mean_timeseries.tsv"
    partial = out / "sub-01" / "func" / f"sub-01_{stem}_stat-partialcorrelation_relmat.tsv"
    assert run_file.is_file() and partial.is_file()
    names = pd.read_csv(out / f"seg-pavi{k}_dseg.tsv", sep="\t")["name"].tolist()
    assert pd.read_csv(run_file, sep="\t").columns.tolist() == names
    frame = pd.read_csv(partial, sep="\t", index_col="Node")
    assert frame.index.tolist() == names and np.allclose(np.diag(frame.to_numpy()), 1.0)
    assert (out / "model" / "connectome" / f"seg-pavi{k}_graph.tsv").is_file()
    bidsignore = (out / ".bidsignore").read_text()
    assert "*_relmat.tsv" in bidsignore and "*_timeseries.tsv" in bidsignore

    before = run_file.stat().st_mtime_ns
    partial.unlink()                                            # as if killed before the subject files
    assert main(["connectome", str(out)]) == 0
    assert partial.is_file() and run_file.stat().st_mtime_ns == before   # run series reused, not recomputed
    assert main(["connectome", str(out), "connectome.weighting=hard"]) == 0
    assert run_file.stat().st_mtime_ns != before                # another weighting: recomputed
    assert main(["connectome", str(out), "connectome.weighting=median"]) == 2

    assert main(["validate", str(out), "--truth", str(sim.truth_dir)]) == 0
    metrics = pd.read_csv(out / "model" / "metrics.tsv", sep="\t")
    mean = metrics[metrics.subject == "mean"].iloc[0]
    assert mean["graph_partial_r"] > 0.5
    assert 0 < mean["graph_edge_f1"] <= 1
