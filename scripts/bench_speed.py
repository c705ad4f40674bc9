"""Speed benchmark: ELBO versus training time for PAVI-E, PAVI-F, mean-field SVI (and VB-EM).

The gradient methods share the model, the ELBO, the optimiser, the plate subsampling and the
starting point (the group k-means :class:`~pavi_parcel.model.guide.InitState`, saved next to the
store and reused by every method). Their training loop is the one of
:func:`pavi_parcel.inference.training.fit_model` (same minibatch draws, end-of-epoch theta refit and label
calibration); the ELBO is evaluated at regular intervals of training time (evaluation time
excluded) on a fixed subset of subjects, scaled to the cohort: an unbiased estimate of the full
ELBO, identical for every method. SVI runs for its budget; the others run until they pass 99.5 %
of the ELBO gain SVI reached, or the same budget. Evaluations are spaced geometrically in
training time (factor sqrt(2)), so the time to a level (the first evaluation at or above it, an
upper bound) is resolved within that factor.

VB-EM optimises its own objective (ELBO with a MAP spatial prior), so its trace is reported as a
fraction of its own final gain, against wall time.

Usage::

    python scripts/bench_speed.py --sizes 10 100 --out bench/ --data-root /tmp/bench_data \\
        --svi-minutes 10 --eval-subjects 5

Writes ``OUT/results.json``, ``OUT/bench.md`` (markdown table) and ``OUT/elbo_vs_time.png``.
``python scripts/benchmark.py --sections elbo`` runs the same measurement as part of the whole
suite (``docs/benchmarks.md``). The functions here are imported by that script.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

FRACTIONS = (0.9, 0.99)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load_or_make_init(init_path: Path | None, source, model, fit, seed: int):
    """The shared starting point: read ``init_path`` if present, else compute and save it there."""
    from pavi_parcel.inference.initialisation import initialise
    from pavi_parcel.model.guide import InitState

    if init_path is not None and Path(init_path).exists():
        return InitState(**torch.load(init_path, weights_only=False))
    init = initialise(source, model, fit, seed=seed)
    if init_path is not None:
        torch.save({f.name: getattr(init, f.name) for f in dataclasses.fields(InitState)}, init_path)
    return init


def trace_fit(store_path: Path, method: str, budget: float, target: float | None = None, n_evals: int = 12,
              eval_subjects: int = 5, init_path: Path | None = None, memory_gb: float = 2.0,
              lr: float | None = None, threads: int = 1, match_start: bool = True, n_networks: int = 17,
              seed: int = 0, pass_subjects: int = 0, calibration: str = "consistency") -> dict:
    """Train one gradient method on a store for ``budget`` seconds of training time; trace its ELBO.

    Parameters
    ----------
    store_path : Path
    method : {"pavi_e", "pavi_f", "svi"}
    budget : float
        Training seconds (evaluations excluded).
    target : float or None
        Stop early once an evaluated ELBO reaches this value.
    n_evals : int
        Evaluations after the start, at ``budget * 2 ** (-(n_evals - 1 - i) / 2)``; 0 = none
        (only the step timings are recorded).
    eval_subjects : int
        Subjects (evenly spread) whose exact ELBO, scaled to the cohort, is the estimate.
    init_path : Path or None
        Shared :class:`InitState` file (created when missing).
    memory_gb : float
        Cache budget of packed fingerprints (``fit.memory_budget_gb``).
    lr : float or None
        Adam learning rate; None = the fit default.
    threads : int
        torch CPU threads; 0 = torch's default.
    match_start : bool
        SVI only: set its free label logits from PAVI-E's initial encoder output (one untimed
        pass over every subject), so both start at the same ELBO.
    n_networks, seed : int
    pass_subjects : int
        After training, time the output passes (encoding refresh + posterior) on this many
        subjects, and one label calibration.
    calibration : str
        ``model.calibration``; ``"none"`` trains PAVI as a pure ELBO optimiser (the label
        calibration deliberately trades ELBO for calibrated probabilities).

    Returns
    -------
    dict
        ``trace`` [(train_seconds, step, elbo)], ``params``, ``steps``, ``train_seconds``,
        ``steps_per_epoch``, ``epochs``, ``init_seconds``, ``eval_seconds``,
        ``calibration_seconds`` (both None without ``pass_subjects``), ``pass_seconds_per_subject``
        and ``peak_rss_gb`` of this process.
    """
    from pavi_parcel.inference.calibration import calibrate_in_training, calibrate_labels, calibrating
    from pavi_parcel.inference.epochs import epoch_batch
    from pavi_parcel.inference.optim import build_guide, make_optimizer
    from pavi_parcel.inference.passes import subject_pass
    from pavi_parcel.inference.state import TrainState
    from pavi_parcel.inference.stream import FingerprintSource
    from pavi_parcel.inference.training import train_step
    from pavi_parcel.model.hierarchy import PlateScale, theta_term
    from pavi_parcel.settings.schema import FitSettings, ModelSettings
    from pavi_parcel.stores.fingerprints import FingerprintStore

    if threads > 0:
        torch.set_num_threads(threads)
    t_setup = time.perf_counter()
    store = FingerprintStore(store_path)
    model = ModelSettings(n_networks=n_networks, calibration=calibration)
    fit = FitSettings(method=method, **({"lr": lr} if lr is not None else {}))
    source = FingerprintSource(store, memory_gb, torch.device("cpu"))
    init = load_or_make_init(init_path, source, model, fit, seed)
    n_sub = store.n_subjects
    guide = build_guide(init, n_sub, store.n_sessions, model, fit, seed)
    opt = make_optimizer(guide, fit)
    smask = torch.as_tensor(store.session_mask)
    n_batch = min(fit.batch_subjects, n_sub)
    n_patch = len(guide.patches)
    scale = PlateScale(n_sub / n_batch, float(n_patch))
    n_obs = float(smask.sum()) * store.n_vertices
    steps_per_epoch = math.ceil(n_sub / n_batch) * n_patch
    chosen = np.linspace(0, n_sub - 1, min(eval_subjects, n_sub)).round().astype(int)

    def evaluate() -> float:
        total = 0.0
        with torch.no_grad():
            for s in chosen:
                total += sum(subject_pass(guide, source, int(s), smask, update=False)[1].values())
            total *= n_sub / len(chosen)
            total += float(theta_term(guide.theta_beta(slice(None)), guide.alpha(), PlateScale()))
        return total

    if method == "svi" and match_start:
        start = build_guide(init, n_sub, store.n_sessions, model, fit.replace(method="pavi_e"), seed)
        with torch.no_grad():
            for s in range(n_sub):
                probs = torch.as_tensor(subject_pass(start, source, s, smask, update=False)[0])
                guide.logits[s] = torch.log(probs.clamp_min(1e-30))
                guide.update_labels(torch.tensor([s]), slice(None), probs[None])
        del start
    init_seconds = time.perf_counter() - t_setup
    eval_seconds = 0.0
    trace = []
    if n_evals > 0:
        t0 = time.perf_counter()
        trace.append((0.0, 0, evaluate()))
        eval_seconds += time.perf_counter() - t0
    state = TrainState()
    eval_times = list(budget * 2.0 ** (-0.5 * np.arange(n_evals)[::-1])) if n_evals > 0 else []
    next_eval = eval_times.pop(0) if eval_times else math.inf
    train_seconds, calib_seconds, n_calib = 0.0, 0.0, 0
    while train_seconds < budget:
        t0 = time.perf_counter()
        subj, patch = epoch_batch(seed, state.epochs, state.epoch_n, n_sub, n_batch, n_patch)
        terms = train_step(guide, opt, source, smask, subj, patch, scale, n_obs)
        state.record(float(terms.total), train_seconds)
        # the fit's end-of-epoch work (theta prior refit, label calibration) counts as training
        if state.close_epoch(steps_per_epoch, fit.tol, fit.min_epochs):
            guide.refit_theta_prior()
            t1 = time.perf_counter()
            if calibrate_in_training(guide, source, smask, model, fit):
                calib_seconds += time.perf_counter() - t1
                n_calib += 1
        train_seconds += time.perf_counter() - t0
        if train_seconds >= next_eval:
            t0 = time.perf_counter()
            trace.append((train_seconds, state.step, evaluate()))
            eval_seconds += time.perf_counter() - t0
            next_eval = eval_times.pop(0) if eval_times else math.inf
            if target is not None and trace[-1][2] >= target:
                break
    pass_seconds = calibration_seconds = None
    if pass_subjects > 0:
        t0 = time.perf_counter()
        with torch.no_grad():
            for s in range(min(pass_subjects, n_sub)):
                subject_pass(guide, source, s, smask, update=True)
                subject_pass(guide, source, s, smask, update=False)
        pass_seconds = (time.perf_counter() - t0) / min(pass_subjects, n_sub)
        calibration_seconds = 0.0
        if calibrating(guide, model):
            t0 = time.perf_counter()
            calibrate_labels(guide, source, smask, fit.calibration_subjects)
            calibration_seconds = time.perf_counter() - t0
    store.close()
    return {"method": method, "n_subjects": n_sub, "n_vertices": store.n_vertices, "n_seeds": store.n_seeds,
            "trace": trace, "params": guide.n_variational_parameters(), "steps": state.step,
            "train_seconds": train_seconds, "steps_per_epoch": steps_per_epoch,
            "epochs": state.step / steps_per_epoch, "init_seconds": init_seconds, "eval_seconds": eval_seconds,
            "pass_seconds_per_subject": pass_seconds, "calibration_seconds": calibration_seconds,
            "calibrations_in_training": n_calib, "calibration_seconds_in_training": calib_seconds,
            "peak_rss_gb": _peak_rss_gb(), "lr": fit.lr,
            "threads": threads, "budget": budget, "target": target}


def vbem_trace(store_path: Path, n_networks: int = 17, max_iter: int = 50, seed: int = 0,
               threads: int = 1) -> dict:
    """VB-EM objective after every iteration against wall time (group k-means included)."""
    from pavi_parcel.model.baselines import fit_vbem
    from pavi_parcel.stores.fingerprints import FingerprintStore

    torch.set_num_threads(threads)
    start = time.perf_counter()
    trace = []
    with FingerprintStore(store_path) as store:
        result = fit_vbem(store, n_networks, seed=seed, max_iter=max_iter,
                          callback=lambda it, sec, obj, _: trace.append((time.perf_counter() - start, it, obj)))
        s, t, n, d = store.n_subjects, store.n_sessions, store.n_vertices, store.n_seeds
    k = n_networks
    # q(y): S*N*K, q(nu): S*T*K*(D+1), q(psi): S*K*(D+1) (direction + concentration), all closed-form
    params = {"learned": 0, "closed_form_local": s * n * k + s * t * k * (d + 1) + s * k * (d + 1),
              "mu": k * d}
    return {"method": "vbem", "n_subjects": s, "trace": trace, "params": params,
            "n_iter": int(result.extra["n_iter"]), "converged": bool(result.extra["converged"]),
            "seconds": time.perf_counter() - start, "peak_rss_gb": _peak_rss_gb()}


def time_to(trace: list, level: float) -> float:
    """Training time of the first evaluation at or above ``level`` (inf when never reached)."""
    for t, _, e in trace:
        if e >= level:
            return float(t)
    return math.inf


def speed_summary(runs: dict[str, dict], fractions=FRACTIONS) -> dict:
    """Times to ``fractions`` of SVI's ELBO gain for each gradient method, and SVI / method ratios."""
    svi = runs["svi"]["trace"]
    start, gain = svi[0][2], max(e for _, _, e in svi) - svi[0][2]
    out = {"svi_start": start, "svi_gain": gain, "methods": {}}
    for name, res in runs.items():
        if name == "vbem" or not res.get("trace"):
            continue
        row = {}
        for frac in fractions:  # no gain (budget too short): times undefined
            row[f"t{round(frac * 100)}"] = time_to(res["trace"], start + frac * gain) if gain > 0 else math.nan
        out["methods"][name] = row
    for row in out["methods"].values():
        for frac in fractions:
            key = f"t{round(frac * 100)}"
            mine, ref = row[key], out["methods"]["svi"][key]
            row[f"ratio_{key}"] = math.nan if math.isnan(mine) else ref / mine if mine > 0 else math.inf
    return out


def vbem_summary(res: dict, fractions=FRACTIONS) -> dict:
    """VB-EM wall time to ``fractions`` of its own objective gain (first iteration -> last)."""
    tr = res["trace"]
    if len(tr) < 2:
        return {f"t{round(f * 100)}": tr[0][0] if tr else math.nan for f in fractions}
    start, gain = tr[0][2], tr[-1][2] - tr[0][2]
    return {f"t{round(f * 100)}": time_to(tr, start + f * gain) for f in fractions}


# --------------------------------------------------------------------------- stand-alone command
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
        res = trace_fit(args.store, args.method, args.budget, args.target, args.n_evals, args.eval_subjects,
                        Path(args.init), args.memory_gb, args.lr, args.threads)
        print(json.dumps(res))
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
        start, gain = svi["trace"][0][2], max(e for _, _, e in svi["trace"]) - svi["trace"][0][2]
        pavi = _run(store, "pavi_e", budget, start + 0.995 * gain, args)
        summary = speed_summary({"svi": svi, "pavi_e": pavi})
        results.append({"n_subjects": n, "svi": svi, "pavi_e": pavi, "summary": summary})
        (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    _report(results, args.out)


def _report(results: list, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    lines = ["| subjects | method | t90 (s) | t99 (s) | SVI t99 / method t99 | learned params | closed-form theta | "
             "peak RSS (GB) |", "|---|---|---|---|---|---|---|---|"]
    for ax, row in zip(axes[0], results):
        summ = row["summary"]
        for name in ("svi", "pavi_e"):
            tr = np.array([(t, e) for t, _, e in row[name]["trace"]])
            if summ["svi_gain"] > 0:
                ax.plot(np.maximum(tr[:, 0], 1e-1), (tr[:, 1] - summ["svi_start"]) / summ["svi_gain"], "o-",
                        label=name)
            m, params = summ["methods"][name], row[name]["params"]
            lines.append(f"| {row['n_subjects']} | {name} | {m['t90']:.1f} | {m['t99']:.1f} | {m['ratio_t99']:.1f} | "
                         f"{params['learned']:,} | {params['closed_form_theta']:,} | {row[name]['peak_rss_gb']:.2f} |")
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
