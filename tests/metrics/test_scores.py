"""Metrics on planted answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pavi_parcel.metrics.scores import (
    adjusted_rand_index,
    dice_per_network,
    entropy_map,
    expected_calibration_error,
    homogeneity,
    hungarian_match,
    mean_dice_after_matching,
    reliability_curve,
)


def test_ari_identical_and_permuted_partitions_score_one():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 7, 500)
    perm = rng.permutation(7)
    assert adjusted_rand_index(a, a) == pytest.approx(1.0)
    assert adjusted_rand_index(a, perm[a]) == pytest.approx(1.0)
    assert adjusted_rand_index(a, perm[a] + 10) == pytest.approx(1.0)  # label values need not match


def test_ari_hand_computed_and_independent():
    # contingency [[2, 1], [0, 2]]: index 2, row and column pair sums 4 and 4 over 10 pairs
    # -> ARI = (2 - 4*4/10) / ((4 + 4)/2 - 4*4/10)
    a = [0, 0, 0, 1, 1]
    b = [0, 0, 1, 1, 1]
    assert adjusted_rand_index(a, b) == pytest.approx((2 - 1.6) / (4 - 1.6))
    rng = np.random.default_rng(1)
    assert abs(adjusted_rand_index(rng.integers(0, 5, 20000), rng.integers(0, 5, 20000))) < 0.01


def test_ari_ignores_negative_labels():
    a = np.array([0, 0, 1, 1, -1, -1])
    b = np.array([1, 1, 0, 0, 0, 1])
    assert adjusted_rand_index(a, b) == pytest.approx(1.0)


def test_ari_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    for n, k1, k2 in [(50, 3, 4), (1000, 17, 7), (300, 2, 9)]:
        a, b = rng.integers(0, k1, n), rng.integers(0, k2, n)
        b[: n // 2] = a[: n // 2] % k2  # partial agreement
        assert adjusted_rand_index(a, b) == pytest.approx(sk.adjusted_rand_score(a, b), abs=1e-12)


def test_hungarian_match_undoes_a_permutation():
    rng = np.random.default_rng(3)
    ref = rng.integers(0, 6, 2000)
    perm = rng.permutation(6)
    pred = perm[ref]
    noisy = pred.copy()
    flip = rng.random(2000) < 0.2
    noisy[flip] = rng.integers(0, 6, flip.sum())
    mapping = hungarian_match(noisy, ref, 6)
    assert np.array_equal(mapping[perm], np.arange(6))
    assert sorted(mapping) == list(range(6))
    # 2-D input pools subjects
    assert np.array_equal(hungarian_match(np.stack([pred, pred]), np.stack([ref, ref]), 6), mapping)


def test_dice_per_network_and_after_matching():
    a = np.array([0, 0, 1, 1, 2, 2, 2, -1])
    b = np.array([0, 1, 1, 1, 2, 2, 0, 2])
    np.testing.assert_allclose(dice_per_network(a, b, 4)[:3], [2 * 1 / 4, 2 * 2 / 5, 2 * 2 / 5])
    assert np.isnan(dice_per_network(a, b, 4)[3])
    perm = np.array([2, 0, 1])
    assert mean_dice_after_matching(perm[b[:7]], b[:7], 3) == pytest.approx(1.0)
    assert mean_dice_after_matching(perm[a[:7]], b[:7], 3) == pytest.approx(np.mean([0.5, 0.8, 0.8]))


def test_ece_zero_for_calibrated_draws_and_large_for_overconfident():
    rng = np.random.default_rng(4)
    n, k = 200_000, 5
    probs = rng.dirichlet(np.full(k, 0.5), n)
    truth = (rng.random(n)[:, None] > probs.cumsum(1)).sum(1)  # labels drawn from probs
    assert expected_calibration_error(probs, truth) < 0.01
    onehot = np.eye(k)[probs.argmax(1)]
    overconfident = expected_calibration_error(onehot, truth)
    accuracy = np.mean(probs.argmax(1) == truth)
    assert overconfident == pytest.approx(1 - accuracy, abs=1e-9)


def test_reliability_curve_bins():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    truth = np.array([0, 1, 0, 0])
    conf, acc, counts = reliability_curve(probs, truth, n_bins=10)
    assert counts.sum() == 4 and counts[9] == 2 and counts[5] == 2
    np.testing.assert_allclose([conf[9], acc[9], conf[5], acc[5]], [0.95, 0.5, 0.55, 1.0])
    assert np.isnan(acc[0])
    assert expected_calibration_error(probs, truth, 10) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)


def _brute_homogeneity(labels, ts):
    corr = np.corrcoef(ts.T)
    total, weight = 0.0, 0
    for lab in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == lab)
        if idx.size < 2:
            continue
        pairs = [corr[i, j] for i, j in itertools.combinations(idx, 2)]
        total += np.mean(pairs) * idx.size
        weight += idx.size
    return total / weight


def test_homogeneity_matches_brute_force():
    rng = np.random.default_rng(5)
    sources = rng.standard_normal((120, 4))
    labels = rng.integers(0, 4, 60)
    ts = sources[:, labels] + 0.8 * rng.standard_normal((120, 60)) + 3.0  # offsets must not matter
    labels[:3] = -1
    labels[3] = 7  # a singleton parcel is skipped
    assert homogeneity(labels, ts) == pytest.approx(_brute_homogeneity(labels, ts), rel=1e-10)
    # the true parcellation is more homogeneous than a shuffled one
    assert homogeneity(labels, ts) > homogeneity(rng.permutation(labels), ts) + 0.2


def test_entropy_map():
    probs = np.array([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(entropy_map(probs), [0.0, np.log(4), np.log(2)])
    np.testing.assert_allclose(entropy_map(probs, normalized=True), [0.0, 1.0, 0.5])
    assert entropy_map(np.stack([probs, probs])).shape == (2, 3)
