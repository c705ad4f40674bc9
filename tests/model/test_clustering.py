"""Spherical k-means (over-cluster, merge, refine) on planted clusters."""

import numpy as np
import pytest
import torch

from pavi_parcel.metrics.scores import adjusted_rand_index
from pavi_parcel.model.clustering import lloyd, merge_clusters, spherical_kmeans
from pavi_parcel.model.hierarchy import project_sphere


def _planted(sizes, spreads, dim=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = project_sphere(torch.as_tensor(rng.standard_normal((len(sizes), dim)))).numpy()
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[truth] + np.asarray(spreads)[truth, None] * rng.standard_normal((len(truth), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), truth


def test_finds_planted_directions():
    x, truth = _planted([200] * 5, [0.05] * 5)
    labels, found, objective = spherical_kmeans(x, 5, seed=1)
    assert adjusted_rand_index(labels, truth) == pytest.approx(1.0)
    np.testing.assert_allclose(np.linalg.norm(found, axis=1), 1.0, rtol=1e-5)
    assert 0.5 < objective < 1.0


def test_small_clusters_survive_next_to_large_diffuse_ones():
    # four large diffuse clusters and eight small tight ones: plain k-means++ spends two centres
    # on a large cluster and merges two small ones
    sizes, spreads = [1500] * 4 + [40] * 8, [0.1] * 4 + [0.03] * 8
    x, truth = _planted(sizes, spreads, seed=3)
    plain = [adjusted_rand_index(spherical_kmeans(x, 12, seed=s, overcluster=1)[0], truth) for s in range(6)]
    merged = [adjusted_rand_index(spherical_kmeans(x, 12, seed=s)[0], truth) for s in range(6)]
    assert min(merged) > 0.99
    assert min(plain) < 0.99  # the case is hard for plain k-means (not vacuous)


def test_order_is_deterministic_and_by_size():
    x, _ = _planted([60, 30, 10], [0.05] * 3, dim=10)
    perm = np.random.default_rng(0).permutation(len(x))
    lab1, cent1, _ = spherical_kmeans(x, 3, seed=1)
    lab2, cent2, _ = spherical_kmeans(x[perm], 3, seed=7)
    assert np.bincount(lab1).tolist() == [60, 30, 10]  # largest network first
    np.testing.assert_array_equal(lab1[perm], lab2)
    np.testing.assert_allclose(cent1, cent2, atol=1e-5)


def test_merge_joins_the_cheapest_pair():
    # four clusters on two axes: the two near +e0 and the two near +e1 merge, not across
    c = torch.tensor([[1.0, 0.1, 0.0], [1.0, -0.1, 0.0], [0.0, 1.0, 0.1], [0.0, 1.0, -0.1]])
    c = c / c.norm(dim=1, keepdim=True)
    data = torch.cat([c[i].expand(10, 3) for i in range(4)])
    merged = merge_clusters(data, c, 2)
    axes = merged.abs().argmax(1).sort().values.tolist()
    assert axes == [0, 1]
    np.testing.assert_allclose(lloyd(data, merged, 10).norm(dim=1), 1.0, rtol=1e-6)
