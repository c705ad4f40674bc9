"""The minibatches of an epoch: every (subject, vertex patch) pair once, in an order fixed by (seed, epoch)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np


def epoch_batch(seed: int, epoch: int, index: int, n_subjects: int, n_batch: int,
                n_patches: int) -> tuple[np.ndarray, int]:
    """The ``index``-th minibatch of an epoch: ``n_batch`` distinct subjects (sorted) and one patch.

    An epoch visits every (subject, patch) pair once, in a random order that depends only on
    ``(seed, epoch)``, so a resumed fit draws what an uninterrupted one would. Sampling
    without replacement matters for the closed-form state (encodings, theta's counts): drawn with
    replacement, an epoch leaves about a third of the pairs unvisited and the fit needed about
    twice the steps to reach the same ELBO (100 subjects, PAVI-E).
    """
    subjects, patches = epoch_plan(seed, epoch, n_subjects, n_batch, n_patches)
    return subjects[index % len(patches)], int(patches[index % len(patches)])


@lru_cache(maxsize=2)
def epoch_plan(seed: int, epoch: int, n_subjects: int, n_batch: int,
               n_patches: int) -> tuple[np.ndarray, np.ndarray]:
    """Minibatches of one epoch: subjects (steps, n_batch) and patches (steps,).

    For each patch, a permutation of the subjects is cut into ``ceil(n_subjects / n_batch)``
    batches; the last is filled up with other subjects so that every batch has the size the
    plate scaling assumes. The (batch, patch) pairs are then shuffled.
    """
    rng = np.random.default_rng([seed, 1, epoch])
    per_patch = math.ceil(n_subjects / n_batch)
    subjects = np.empty((n_patches, per_patch, n_batch), dtype=np.int64)
    for p in range(n_patches):
        perm = rng.permutation(n_subjects)
        short = per_patch * n_batch - n_subjects
        if short:
            fill = rng.choice(perm[:n_subjects - (n_batch - short)], short, replace=False)
            perm = np.concatenate([perm, fill])
        subjects[p] = np.sort(perm.reshape(per_patch, n_batch), axis=1)
    patches = np.repeat(np.arange(n_patches), per_patch)
    order = rng.permutation(len(patches))
    return subjects.reshape(-1, n_batch)[order], patches[order]


__all__ = ["epoch_batch", "epoch_plan"]
