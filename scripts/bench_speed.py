"""Speed benchmark: PAVI-E versus mean-field SVI (same model, ELBO, optimiser, subsampling).

For each cohort size, both methods start from the same initialisation; the ELBO is evaluated at
regular intervals of training time (evaluation time excluded) on a fixed subset of subjects
(scaled to the cohort: an unbiased estimate of the full ELBO, identical for both methods). SVI
runs for its budget; PAVI-E runs until it passes 99 % of the ELBO gain SVI reached, or the same
budget. Evaluations are spaced geometrically in training time (factor sqrt(2)), so times to a
level are resolved within that factor (they are the first evaluation at or above the level, an
upper bound). Reported: time to 90 % and 99 % of SVI's gain for each method, their ratio, variational
parameter counts and peak memory (each method runs in its own process).

Usage::

    python scripts/bench_speed.py --sizes 10 100 --out bench/ --data-root /tmp/bench_data \\
        --svi-minutes 10 --eval-subjects 5

Writes ``OUT/results.json``, ``OUT/bench.md`` (markdown table) and ``OUT/elbo_vs_time.png``.
Stores are simulated with :func:`pavi_parcel.simulate.simulate_fingerprint_store` when missing
(fsaverage5, 2 sessions, K = 17, about 1,175 seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _worker(args: argparse.Namespace) -> None:
    """Run one method on one store; print a JSON line with the ELBO trace."""
    from pavi_parcel.fit import (FIT_DEFAULTS, MODEL_DEFAULTS, FingerprintSource, build_guide, draw_batch,
                                 initialise, make_optimizer, settings_from, subject_pass, train_step)
    from pavi_parcel.model.guide import InitState
    from pavi_parcel.model.hierarchy import PlateScale, theta_term
    from pavi_parcel.store import FingerprintStore

    torch.set_num_threads(args.threads)
    store = FingerprintStore(args.store)
    model = settings_from({"n_networks": 17}, MODEL_DEFAULTS)
    fit = settings_from({"method": args.method, "lr": args.lr}, FIT_DEFAULTS)
    dev = torch.device("cpu")
    source = FingerprintSource(store, args.memory_gb, dev)
    init_path = Path(args.init)
    if init_path.exists():
        init = InitState(**torch.load(init_path, weights_only=False))
    else:
        init = initialise(source, model, fit, seed=0)
        torch.save({k: getattr(init, k) for k in ("mu", "group_labels", "concentrations", "rho", "patches", "dim")},
                   init_path)
    n_sub = store.n_subjects
    guide = build_guide(args.method, init, n_sub, store.n_sessions, model, fit, 0)
    opt = make_optimizer(guide, fit)
    smask = torch.as_tensor(store.session_mask)
    n_batch = min(int(fit["batch_subjects"]), n_sub)
    scale = PlateScale(n_sub / n_batch, float(len(guide.patches)))
    n_obs = float(smask.sum()) * store.n_vertices
    eval_subjects = np.linspace(0, n_sub - 1, min(args.eval_subjects, n_sub)).round().astype(int)

    def evaluate() -> float:
        total = 0.0
        with torch.no_grad():
            for s in eval_subjects:
                total += sum(subject_pass(guide, source, int(s), smask, update=False)[1].values())
            total *= n_sub / len(eval_subjects)
            total += float(theta_term(guide.theta_beta(slice(None)), guide.alpha(), PlateScale()))
        return total

    if args.method == "svi":
        # Same starting point as PAVI: SVI's free label logits start from the encoder's initial
        # output (one full pass, not timed), so both methods start at the same ELBO.
        start = build_guide("pavi_e", init, n_sub, store.n_sessions, model, fit, 0)
        with torch.no_grad():
            for s in range(n_sub):
                probs = subject_pass(start, source, s, smask, update=False)[0]
                guide.logits[s] = torch.log(torch.as_tensor(probs).clamp_min(1e-30))
                guide.update_labels(torch.tensor([s]), slice(None), torch.as_tensor(probs)[None])
        del start
    rng = np.random.default_rng([0, 1])
    trace = [(0.0, 0, evaluate())]
    train_seconds, step = 0.0, 0
    eval_times = list(args.budget * 2.0 ** (-0.5 * np.arange(args.n_evals)[::-1]))
    next_eval = eval_times.pop(0)
    while train_seconds < args.budget:
        t0 = time.perf_counter()
        subj, patch = draw_batch(rng, n_sub, n_batch, len(guide.patches))
        train_step(guide, opt, source, smask, subj, patch, scale, n_obs)
        train_seconds += time.perf_counter() - t0
        step += 1
        if train_seconds >= next_eval:
            trace.append((train_seconds, step, evaluate()))
            next_eval = eval_times.pop(0) if eval_times else math.inf
            if args.target is not None and trace[-1][2] >= args.target:
                break
    print(json.dumps({"method": args.method, "n_subjects": n_sub, "trace": trace,
                      "params": guide.n_variational_parameters(),
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def _time_to(trace: list, level: float) -> float:
    for t, _, e in trace:
        if e >= level:
            return t
    return math.inf


def _run(store: Path, method: str, budget: float, target: float | None, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--store", str(store), "--method", method,
           "--budget", str(budget), "--n-evals", str(args.n_evals), "--eval-subjects", str(args.eval_subjects),
           "--init", str(store.parent / "bench_init.pt"), "--memory-gb", str(args.memory_gb),
           "--lr", str(args.svi_lr if method == "svi" else args.lr), "--threads", str(args.threads)]
    if target is not None:
        cmd += ["--target", str(target)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    p.add_argument("--out", type=Path, default=Path("bench"))
    p.add_argument("--data-root", type=Path, default=Path("bench_data"))
    p.add_argument("--svi-minutes", type=float, default=10.0)
    p.add_argument("--n-evals", type=int, default=12)
    p.add_argument("--eval-subjects", type=int, default=5)
    p.add_argument("--memory-gb", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--svi-lr", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per method (same for both)")
    p.add_argument("--worker", action="store_true")
    p.add_argument("--store", type=Path)
    p.add_argument("--method")
    p.add_argument("--budget", type=float)
    p.add_argument("--target", type=float)
    p.add_argument("--init")
    args = p.parse_args()
    if args.worker:
        _worker(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.sizes:
        store = args.data_root / f"n{n}" / "fp.h5"
        if not store.exists():
            from pavi_parcel.simulate import simulate_fingerprint_store

            simulate_fingerprint_store(store, n, 2, 17, seed=0, progress=True)
        budget = 60.0 * args.svi_minutes
        svi = _run(store, "svi", budget, None, args)
        start, best = svi["trace"][0][2], max(e for _, _, e in svi["trace"])
        gain = best - start
        pavi = _run(store, "pavi_e", budget, start + 0.995 * gain, args)
        row = {"n_subjects": n, "svi": svi, "pavi_e": pavi, "svi_gain": gain}
        for name, res in (("svi", svi), ("pavi_e", pavi)):
            for frac in (0.9, 0.99):
                row[f"{name}_t{int(frac * 100)}"] = _time_to(res["trace"], start + frac * gain)
        row["ratio_t99"] = row["svi_t99"] / row["pavi_e_t99"] if row["pavi_e_t99"] > 0 else math.inf
        results.append(row)
        (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    _report(results, args.out)


def _report(results: list, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    lines = ["| subjects | method | t90 (s) | t99 (s) | SVI t99 / PAVI t99 | learned params | closed-form theta | "
             "peak RSS (GB) |", "|---|---|---|---|---|---|---|---|"]
    for ax, row in zip(axes[0], results):
        start = row["svi"]["trace"][0][2]
        for name in ("svi", "pavi_e"):
            tr = np.array([(t, e) for t, _, e in row[name]["trace"]])
            ax.plot(np.maximum(tr[:, 0], 1e-1), (tr[:, 1] - start) / row["svi_gain"], "o-", label=name)
            params = row[name]["params"]
            lines.append(f"| {row['n_subjects']} | {name} | {row[f'{name}_t90']:.1f} | {row[f'{name}_t99']:.1f} | "
                         f"{row['ratio_t99']:.1f} | {params['learned']:,} | {params['closed_form_theta']:,} | "
                         f"{row[name]['peak_rss_gb']:.2f} |")
        ax.axhline(0.99, ls=":", c="k")
        ax.set_xscale("log")
        ax.set_xlabel("training time (s)")
        ax.set_ylabel("fraction of SVI's ELBO gain")
        ax.set_title(f"{row['n_subjects']} subjects")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "elbo_vs_time.png", dpi=120)
    (out / "bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
