"""Potts smoothing with planted answers: smoothing helps a smooth map, beta stays off without structure."""

import numpy as np
import torch

from pavi_parcel.model.potts import (
    choose_beta,
    consistency_gap,
    mean_field,
    neighbour_table,
    smooth_maps,
    smoothed_temperature,
)

SIDE, K = 40, 4


def grid_neighbours() -> torch.Tensor:
    """4-neighbour table of a SIDE x SIDE grid."""
    idx = np.arange(SIDE * SIDE).reshape(SIDE, SIDE)
    edges = np.concatenate([np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
                            np.stack([idx[:-1].ravel(), idx[1:].ravel()], 1)])
    return neighbour_table(edges, np.arange(SIDE * SIDE), SIDE * SIDE)


def smooth_truth() -> np.ndarray:
    """Four quadrants: a map whose networks are spatially coherent."""
    rows, cols = np.divmod(np.arange(SIDE * SIDE), SIDE)
    return (2 * (rows >= SIDE // 2) + (cols >= SIDE // 2)).astype(int)


def sessions(truth: np.ndarray, rng: np.random.Generator, strength: float = 1.0, n: int = 4) -> torch.Tensor:
    """Noisy log likelihoods of n subjects x 2 independent sessions, shape (n, 2, N, K)."""
    onehot = np.eye(K)[truth]
    out = strength * onehot[None, None] + rng.standard_normal((n, 2, truth.size, K))
    return torch.as_tensor(out, dtype=torch.float32)


def accuracy(q: torch.Tensor, truth: np.ndarray) -> float:
    return float((q.argmax(-1).numpy() == truth[None]).mean())


def test_smoothing_recovers_a_smooth_planted_map_better():
    truth, nb = smooth_truth(), grid_neighbours()
    e = sessions(truth, np.random.default_rng(0))
    unary = torch.log_softmax(e[:, 0], -1)
    plain, smoothed = accuracy(torch.softmax(unary, -1), truth), accuracy(mean_field(unary, nb, 1.0), truth)
    assert smoothed > plain + 0.2


def test_beta_is_chosen_from_the_other_session():
    nb, rng = grid_neighbours(), np.random.default_rng(1)
    smooth = sessions(smooth_truth(), rng)
    unary = torch.log_softmax(torch.cat([smooth[:, 0], smooth[:, 1]]), -1)
    heldout = torch.cat([smooth[:, 1], smooth[:, 0]])
    valid = torch.ones(unary.shape[:2], dtype=torch.bool)
    beta, scores = choose_beta(unary, heldout, valid, nb)
    assert beta >= 0.3 and scores[beta] > scores[0.0]
    # no spatial structure: every vertex's network drawn independently, strong evidence
    noise = sessions(rng.integers(0, K, SIDE * SIDE), rng, strength=3.0)
    unary = torch.log_softmax(torch.cat([noise[:, 0], noise[:, 1]]), -1)
    beta, _ = choose_beta(unary, torch.cat([noise[:, 1], noise[:, 0]]), valid, nb)
    assert beta <= 0.1


def test_smoothed_maps_are_tempered_to_consistency_and_sum_to_one():
    truth, nb = smooth_truth(), grid_neighbours()
    e = sessions(truth, np.random.default_rng(2))
    single = [torch.log(mean_field(torch.log_softmax(e[:, t], -1), nb, 1.0)) for t in (0, 1)]
    joint = torch.log(mean_field(torch.log_softmax(e.sum(1), -1), nb, 1.0))
    gamma = smoothed_temperature(single[0], single[1], joint)
    assert 0.2 < gamma < 2.0 and abs(consistency_gap(single[0], single[1], joint, gamma)) < 1e-3
    assert consistency_gap(single[0], single[1], joint, 2 * gamma) < 0  # sharper = overconfident
    q = smooth_maps(torch.log_softmax(e[:, 0], -1), nb, 1.0, gamma)
    assert torch.allclose(q.sum(-1), torch.ones(q.shape[:2]), atol=1e-5)
    assert torch.allclose(smooth_maps(e[:, 0], nb, 0.0), torch.softmax(e[:, 0], -1))


def test_keep_confidence_moves_labels_and_keeps_each_maps_confidence():
    truth, nb = smooth_truth(), grid_neighbours()
    unary = torch.log_softmax(sessions(truth, np.random.default_rng(3))[:, 0], -1)  # (4 maps, N, K)
    q = smooth_maps(unary, nb, 1.0, keep_confidence=True)
    plain = mean_field(unary, nb, 1.0)
    assert plain.amax(-1).mean() > torch.softmax(unary, -1).amax(-1).mean() + 0.1  # smoothing alone sharpens
    torch.testing.assert_close(q.amax(-1).mean(-1), torch.softmax(unary, -1).amax(-1).mean(-1), atol=1e-4, rtol=0)
    assert torch.equal(q.argmax(-1), plain.argmax(-1)) and accuracy(q, truth) > accuracy(unary.exp(), truth) + 0.2
    torch.testing.assert_close(q.sum(-1), torch.ones(q.shape[:2]))
