"""The fit profiler charges work to the phase it ran in, counts product work exactly, and undoes itself."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

from pavi_parcel.inference import stream, training

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _profiler():
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module("bench_fit_profile")
    finally:
        sys.path.remove(str(SCRIPTS))


def test_products_are_charged_to_the_outermost_phase_and_wrappers_are_removed():
    profile = _profiler()
    originals = (stream.Block.dot, stream.Block.weighted_sums, training.train_step, training.initialise)
    b, t, v, d, n_seeds, k = 2, 2, 50, 16, 13, 3
    gen = torch.Generator().manual_seed(0)
    raw = (torch.rand(b, t, v, d, generator=gen) < 0.3).to(torch.int8)
    ones = raw.sum(-1).float()
    block = stream.Block(raw, torch.ones(b, t, v), ones / n_seeds, ones > 0, n_seeds)
    timer = profile.PhaseTimer()
    with profile.installed(timer):
        assert stream.Block.dot is not originals[0]
        with timer.phase("outer"), timer.phase("inner"):
            block.dot(torch.randn(b, t, k, n_seeds, generator=gen))
            block.weighted_sums(torch.rand(b, v, k, generator=gen))
        block.dot(torch.randn(b, t, k, n_seeds, generator=gen))  # outside any phase
    assert (stream.Block.dot, stream.Block.weighted_sums, training.train_step, training.initialise) == originals
    assert set(timer.seconds) == {"outer"} and timer.calls["outer"] == 1
    assert timer.flop["outer"] == 2 * (2.0 * b * t * v * d * k)  # both products, on the padded width
    assert timer.flop["other"] == 2.0 * b * t * v * d * k
    assert timer.inner["outer", "products"] > 0 and timer.seconds["outer"] >= timer.inner["outer", "products"]
