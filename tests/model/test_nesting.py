"""Nested scales: parents from the group profiles, coarse probabilities as sums of the children's."""

from __future__ import annotations

import numpy as np
import pytest

from pavi_parcel.model.nesting import choose_parents, nest_probabilities


def test_parents_follow_the_profiles_and_every_coarse_network_gets_a_child():
    rng = np.random.default_rng(0)
    coarse = rng.standard_normal((4, 50))
    planted = np.array([0, 0, 1, 1, 1, 2, 3, 3, 2, 0])
    fine = coarse[planted] + 0.3 * rng.standard_normal((10, 50))
    parents, similarity = choose_parents(fine, coarse)
    assert np.array_equal(parents, planted)
    assert similarity.shape == (10,) and (similarity > 0.5).all()
    # a coarse network no fine profile is closest to still gets the child most like it
    lonely = np.vstack([coarse, -coarse[0]])
    parents, _ = choose_parents(fine, lonely)
    assert set(parents.tolist()) == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError):
        choose_parents(fine[:3], coarse)


def test_coarse_probabilities_are_the_sums_of_the_children():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(6), size=(3, 100)).astype(np.float32)
    parents = np.array([2, 0, 1, 0, 2, 2])
    nested = nest_probabilities(probs, parents, 3)
    assert nested.shape == (3, 100, 3) and nested.dtype == np.float32
    assert np.allclose(nested[..., 2], probs[..., [0, 4, 5]].sum(-1), atol=1e-6)
    assert np.allclose(nested.sum(-1), 1.0, atol=1e-5)
