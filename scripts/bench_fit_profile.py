"""Where the time of a PAVI-E fit goes, phase by phase, against this machine's matmul roofline.

Usage::

    python scripts/bench_fit_profile.py                           # 100 subjects, K = 17, default fit
    python scripts/bench_fit_profile.py --n-subjects 20 --out bench_out/profile
    python scripts/bench_fit_profile.py --out docs                # docs/bench_profile.md and .json

Simulates a fingerprint store (``pavi-parcel simulate --fingerprints-only``, seed 0; the one of
``scripts/bench_fit_time.py``, reused when it is there), then

1. measures the machine's matrix-product rates at the fit's own shapes (one batch of 4 subjects x
   2 sessions x 4,096 vertices x 1,175 seeds x K), in float32 (``torch.matmul``) and in the int8
   products the CPU fit uses where they are faster (:mod:`pavi_parcel.model.bitmatmul`), and a square float32 product
   as the peak;
2. runs one default fit (``fit_model``, ``fit=pavi_e``, K = 17, torch's default threads) with
   timers around its phases (initialisation, training steps, theta refits, calibration, the
   refresh and posterior passes, Potts strength and smoothing, saving) and around the two
   fingerprint products (``Block.dot``, ``Block.weighted_sums``) and the store reads
   (``FingerprintSource.get`` / ``rows``: HDF5 read, unpacking, scales), each charged to the
   phase it ran in;
3. writes a table of each phase's wall time, the part of it spent in the products and in reads,
   the products' floating-point work and its time at the float32 roofline.

A full pass (every subject, session and vertex, both products, K = 17) at 100 subjects is
2 x 2 x 100 x 2 x 18,715 x 1,175 x 17 = 299 GFLOP.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pavi_parcel.inference import result as result_module, stream, training
from pavi_parcel.inference.stream import make_patches
from pavi_parcel.model import bitmatmul
from pavi_parcel.model.bitmatmul import bits_times, weights_times
from pavi_parcel.model.guide import GuideBase
from pavi_parcel.settings.schema import ModelSettings, fit_preset
from pavi_parcel.simulate.truth import load_truth
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import read_posterior
from pavi_parcel.validation.scoring import truth_metrics

N_NETWORKS = 17


# --------------------------------------------------------------------------- rates
def _best_seconds(fn, repeats: int = 30) -> float:
    fn()  # warm-up: allocations, thread pool; the best of many repeats, as this machine's load varies
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_rates(n_seeds: int, k: int = N_NETWORKS, batch: tuple[int, int, int] = (4, 2, 4096)) -> dict:
    """GFLOP/s of the fit's two products at one training batch's shape, float32 and int8, and the peak."""
    b, t, v = batch
    d = 8 * -(-n_seeds // 8)
    rng = torch.Generator().manual_seed(0)
    bits8 = (torch.rand(b, t, v, d, generator=rng) < 0.1).to(torch.int8)
    bits32 = bits8.float()
    e = torch.randn(b, t, k, d, generator=rng)
    w = torch.rand(b, t, v, k, generator=rng)
    flop = 2.0 * b * t * v * k * d
    square = torch.randn(2048, 2048, generator=rng)
    rates = {
        "dot_float32": flop / _best_seconds(lambda: torch.matmul(bits32, e.transpose(-1, -2))),
        "weighted_sums_float32": flop / _best_seconds(lambda: torch.matmul(w.transpose(-1, -2), bits32)),
        "peak_float32_2048": 2.0 * 2048**3 / _best_seconds(lambda: square @ square),
    }
    fit_path = "int8" if bitmatmul.integer_products_fast() else "float32"
    forced, bitmatmul.integer_products_fast = bitmatmul.integer_products_fast, lambda: True
    try:  # the integer products themselves, wherever the fit would use them or not
        rates["dot_int8"] = flop / _best_seconds(lambda: bits_times(bits8, e))
        rates["weighted_sums_int8"] = flop / _best_seconds(lambda: weights_times(w, bits8))
    finally:
        bitmatmul.integer_products_fast = forced
    return {name: r / 1e9 for name, r in rates.items()} | {"threads": torch.get_num_threads(), "fit_path": fit_path}


# --------------------------------------------------------------------------- timers
class PhaseTimer:
    """Wall time per outermost phase, with the products and reads inside each charged to it."""

    def __init__(self):
        self.stack: list[str] = []
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.inner: dict[tuple[str, str], float] = defaultdict(float)  # (phase, what) -> seconds
        self.flop: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str):
        outer = not self.stack
        self.stack.append(name)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.stack.pop()
            if outer:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1

    def charge(self, what: str, seconds: float, flop: float = 0.0) -> None:
        phase = self.stack[0] if self.stack else "other"
        self.inner[phase, what] += seconds
        self.flop[phase] += flop


@contextmanager
def installed(timer: PhaseTimer):
    """Wrap the fit's phases and its products where ``fit_model`` looks them up; restore them on exit."""
    saved: list[tuple[object, str, object]] = []

    def replace(owner, attr: str, wrapper_of):
        original = getattr(owner, attr)
        saved.append((owner, attr, original))
        setattr(owner, attr, wrapper_of(original))

    def phased(owner, attr: str, name):
        def wrapper_of(original):
            def wrapper(*args, **kwargs):
                with timer.phase(name(*args, **kwargs) if callable(name) else name):
                    return original(*args, **kwargs)
            return wrapper
        replace(owner, attr, wrapper_of)

    def counted(owner, attr: str, what: str, flop_of):
        def wrapper_of(original):
            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                out = original(*args, **kwargs)
                timer.charge(what, time.perf_counter() - start, flop_of(*args, **kwargs))
                return out
            return wrapper
        replace(owner, attr, wrapper_of)

    def flop(block, k: int) -> float:
        *lead, v, d = block.raw.shape  # (B, T, V, D')
        return 2.0 * float(np.prod(lead)) * v * d * k

    phased(training, "initialise", "initialisation")
    phased(training, "train_step", "training steps")
    phased(GuideBase, "refit_theta_prior", "theta refits (each epoch)")
    phased(training, "calibrate_in_training", "label calibration (each epoch)")
    phased(training, "subject_pass", lambda *a, update=False, **k: "refresh pass" if update else "posterior pass")
    phased(training, "calibrate_labels", "final label calibration")
    phased(training, "choose_potts_beta", "Potts strength")
    phased(training, "smooth_maps", "Potts smoothing of the maps")
    phased(result_module.FitResult, "save", "saving")
    counted(stream.Block, "dot", "products", lambda block, e: flop(block, e.shape[-2]))  # e (B, T, K, D)
    counted(stream.Block, "weighted_sums", "products", lambda block, lam: flop(block, lam.shape[-1]))  # (B, V, K)
    counted(stream.FingerprintSource, "get", "reads", lambda *a, **k: 0.0)
    counted(stream.FingerprintSource, "rows", "reads", lambda *a, **k: 0.0)
    try:
        yield timer
    finally:
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


# --------------------------------------------------------------------------- report
def render(res: dict) -> str:
    rates, rows = res["rates"], res["phases"]
    peak32 = max(rates["dot_float32"], rates["weighted_sums_float32"])
    total = res["fit_seconds"]
    lines = [
        "# Where the time of a PAVI-E fit goes",
        "",
        f"`{res['command']}`: one default fit (`fit=pavi_e`, K = {N_NETWORKS}, {res['n_subjects']} subjects x "
        f"{res['n_sessions']} sessions x {res['n_vertices']:,} vertices x {res['n_seeds']:,} seeds, "
        f"{rates['threads']} torch threads): {total:.1f} s, {res['steps']} steps ({res['epochs']} epochs), "
        f"ARI {res['ari']:.4f}, ECE {res['ece']:.4f}.",
        "",
        "**This machine's products**, at one training batch's shape (4 subjects x 2 sessions x 4,096 vertices, "
        "K = 17): "
        f"`x . e` {rates['dot_float32']:.0f} GFLOP/s in float32, {rates['dot_int8']:.0f} in int8 (exact "
        f"integer products, `model/bitmatmul.py`); the weighted sums {rates['weighted_sums_float32']:.0f} and "
        f"{rates['weighted_sums_int8']:.0f}. The fit times both once per process and takes the faster: "
        f"**{rates.get('fit_path', 'int8')}** here. A square 2,048 float32 product runs at "
        f"{rates['peak_float32_2048']:.0f} "
        f"(the peak). A full pass (both products over every subject, session and vertex) is "
        f"{res['pass_gflop']:.0f} GFLOP: **{res['pass_gflop'] / peak32:.2f} s at the float32 rate of these "
        f"shapes**, {res['pass_gflop'] / rates['peak_float32_2048']:.2f} s at the square-product peak.",
        "",
        "| phase | calls | wall (s) | share | products (s) | reads (s) | product GFLOP | full passes | "
        "at the float32 roofline (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['calls']} | {row['seconds']:.1f} | {row['seconds'] / total:.0%} | "
                     f"{row['products']:.1f} | {row['reads']:.1f} | {row['gflop']:.0f} | "
                     f"{row['gflop'] / res['pass_gflop']:.1f} | {row['gflop'] / peak32:.1f} |")
    gflop = sum(r["gflop"] for r in rows.values())
    lines += [f"| **all** | | **{total:.1f}** | 100% | {sum(r['products'] for r in rows.values()):.1f} | "
              f"{sum(r['reads'] for r in rows.values()):.1f} | {gflop:.0f} | {gflop / res['pass_gflop']:.1f} | "
              f"**{gflop / peak32:.1f}** |", "",
              "Products = `Block.dot` and `Block.weighted_sums` (int8 or float32, as above); reads = the store's "
              "HDF5 reads, unpacking and row scales (`FingerprintSource.get` / `rows`); the rest of a phase is the "
              "model around them (softmax, vMF terms, gradients, Adam, the Potts message passing). The roofline column "
              "is the phase's product work at the float32 rate of the same shapes: the fit's time if nothing but "
              "its products ran, at float32 speed.", ""]
    products, reads = sum(r["products"] for r in rows.values()), sum(r["reads"] for r in rows.values())
    rest = sorted(rows, key=lambda n: rows[n]["seconds"] - rows[n]["products"], reverse=True)[:3]
    lines += [f"**Reading.** The products take {products:.1f} s, {products / (gflop / peak32):.2f}x their time at "
              f"the float32 roofline ({gflop / peak32:.1f} s); the other {total - products:.1f} s "
              f"({(total - products) / total:.0%}) are reads and unpacking ({reads:.1f} s) and everything around "
              "the products. Largest outside the products: "
              + ", ".join(f"{n} {rows[n]['seconds'] - rows[n]['products']:.1f} s (reads {rows[n]['reads']:.1f} s)"
                          for n in rest) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-subjects", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("bench_out/profile"),
                        help="folder of bench_profile.md / .json")
    parser.add_argument("--data", type=Path, default=None,
                        help="simulation folder (default bench_out/fit_time/sN, the one of scripts/bench_fit_time.py)")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild bench_profile.md from OUT/bench_profile.json")
    args = parser.parse_args()
    if args.report_only:
        text = render(json.loads((args.out / "bench_profile.json").read_text()))
        (args.out / "bench_profile.md").write_text(text)
        print(text)
        return
    sim = args.data or Path("bench_out/fit_time") / f"s{args.n_subjects}"
    store_path, truth = sim / "work" / "fingerprints.h5", sim / "truth"
    if not store_path.is_file():
        subprocess.run([sys.executable, "-m", "pavi_parcel.cli", "simulate", str(sim), "--fingerprints-only",
                        "--n-subjects", str(args.n_subjects), "--n-jobs", "2"], check=True, capture_output=True)
    with FingerprintStore(store_path) as store:
        shape = {"n_subjects": store.n_subjects, "n_sessions": store.n_sessions, "n_vertices": store.n_vertices,
                 "n_seeds": store.n_seeds, "present": int(store.session_mask.sum())}
    rates = matmul_rates(shape["n_seeds"])
    timer = PhaseTimer()
    with tempfile.TemporaryDirectory() as fit_dir:  # a fresh folder: no checkpoint to resume from
        start = time.perf_counter()
        with installed(timer):  # fit_preset: the defaults of conf/fit/pavi_e.yaml
            training.fit_model(store_path, Path(fit_dir), ModelSettings(n_networks=N_NETWORKS), fit_preset("pavi_e"),
                               seed=0, device="cpu")
        fit_seconds = time.perf_counter() - start
        post = read_posterior(Path(fit_dir) / "posterior.h5")
    scores = truth_metrics(post, load_truth(truth))
    phases = {}
    for name in [*timer.seconds, *({p for p, _ in timer.inner} - set(timer.seconds))]:
        phases[name] = {"calls": timer.calls.get(name, 0), "seconds": timer.seconds.get(name, 0.0),
                        "products": timer.inner.get((name, "products"), 0.0),
                        "reads": timer.inner.get((name, "reads"), 0.0), "gflop": timer.flop.get(name, 0.0) / 1e9}
    phases["other (setup, guide, logging)"] = {
        "calls": 1, "seconds": fit_seconds - sum(p["seconds"] for p in phases.values()),
        "products": 0.0, "reads": 0.0, "gflop": 0.0}
    d8 = 8 * -(-shape["n_seeds"] // 8)
    fit = fit_preset("pavi_e")
    steps_per_epoch = -(-shape["n_subjects"] // fit.batch_subjects) * len(make_patches(shape["n_vertices"],
                                                                                       fit.batch_vertices))
    res = {"command": "python scripts/bench_fit_profile.py " + " ".join(sys.argv[1:]), **shape, "rates": rates,
           "fit_seconds": fit_seconds, "steps": int(post.attrs["n_steps"]),
           "epochs": round(post.attrs["n_steps"] / steps_per_epoch, 1),
           "ari": float(scores.ari.mean()), "ece": float(scores.ece.mean()),
           "pass_gflop": 2 * 2.0 * shape["present"] * shape["n_vertices"] * d8 * N_NETWORKS / 1e9, "phases": phases}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_profile.json").write_text(json.dumps(res, indent=1))
    text = render(res)
    (args.out / "bench_profile.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
