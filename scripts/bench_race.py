"""The speed race: PAVI-E and PAVI-F against Pyro SVI, tuned mean-field SVI and VB-EM, run to convergence.

Every method fits the same model (the package's MS-HBM, no Potts term, no label calibration) on
the same directly simulated fingerprint store, from the same start (the group k-means
:class:`~pavi_parcel.model.guide.InitState` saved next to the store), with one torch thread, one fit at
a time. Each method is scored by one yardstick (:mod:`race_eval`): the exact ELBO of the
package's variational family on a fixed subset of subjects, scaled to the cohort (its standard
error is reported), and the mean ARI of those subjects against the planted labels.

Methods
-------
pavi_e, pavi_f
    The package's fits (``fit_model``'s training loop), default learning rate.
svi
    The package's mean-field SVI with q(theta) in closed form (Dirichlet of the label counts,
    PAVI's form), its free label logits started from PAVI-E's initial labels; learning rate swept.
pyro
    The same model in Pyro (:mod:`race_pyro`): labels enumerated (``TraceEnum_ELBO``), an
    ``AutoDelta`` guide; learning rate swept.
vbem
    The package's VB-EM (closed-form coordinate ascent over all subjects each iteration), from
    the same k-means labels, with one sigma and one eps for all networks as in this model.

Sweeps: each rate of ``--svi-rates`` / ``--pyro-rates`` trains for ``--sweep-seconds``; a winner at
an edge of the grid extends the grid past it (by the grid's ratio, twice at most); the rate with the
highest ELBO at the end of the sweep continues (same run) until convergence or ``--budget``.

Convergence (every method, one rule): the first evaluation at which doubling the training time
changed the ELBO by less than 0.1 % of the gain made so far (a falling ELBO runs on).
Evaluations are spaced geometrically in
training time (factor sqrt 2); evaluation time is excluded. Reported per method and cohort size:
(i) time to within 0.1 % of the best ELBO gain any method reached (and to 0.1 % of the ELBO's
magnitude), (ii) time to its own convergence, (iii) time to ARI 0.85 and 0.90, (iv) per-step
cost and steps. The 1,000-subject row is extrapolated from the measured ones (see the report).

Usage::

    python scripts/bench_race.py --sizes 10 100 --out docs --data-root /tmp/race_data

Writes ``OUT/bench_race.json`` (resumable: sizes and methods already there are kept unless rerun),
``OUT/bench_race.md`` and ``OUT/bench_race_elbo.png``, ``OUT/bench_race_ari.png``;
``--report-only`` rebuilds the report from the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

METHODS = ("pavi_e", "pavi_f", "svi", "pyro", "vbem")
LABELS = {"pavi_e": "PAVI-E", "pavi_f": "PAVI-F", "svi": "mean-field SVI (tuned)",
          "pyro": "Pyro SVI (AutoDelta, enumerated)",
          "vbem": "VB-EM"}
GAIN_TOLERANCE = 1e-3  # "within 0.1 %" and the convergence rule
ARI_LEVELS = (0.85, 0.90)
N_NETWORKS = 17


class StopRace(Exception):
    """Raised inside VB-EM's state callback to end its run."""


# --------------------------------------------------------------------------- setup shared by every method
def race_setup(store_path: Path, truth_dir: Path, eval_subjects: int, memory_gb: float = 2.0, seed: int = 0):
    """Store, fingerprint source, settings, the shared start and the evaluator of one cohort."""
    from bench_speed import load_or_make_init
    from race_eval import Evaluator, planted_labels

    from pavi_parcel.inference.stream import FingerprintSource
    from pavi_parcel.settings.schema import FitSettings, ModelSettings
    from pavi_parcel.simulate.truth import load_truth
    from pavi_parcel.stores.fingerprints import FingerprintStore

    store = FingerprintStore(store_path)
    model = ModelSettings(n_networks=N_NETWORKS, calibration="none", potts_beta=0.0)
    fit = FitSettings(method="pavi_e")
    source = FingerprintSource(store, memory_gb, torch.device("cpu"))
    init = load_or_make_init(store_path.parent / "race_init.pt", source, model, fit, seed)
    smask = torch.as_tensor(store.session_mask)
    chosen = np.linspace(0, store.n_subjects - 1, min(eval_subjects, store.n_subjects)).round().astype(int)
    evaluator = Evaluator(source, smask, chosen, planted_labels(load_truth(truth_dir), store, chosen))
    return store, source, model, fit, init, smask, evaluator


class GradientRacer:
    """One gradient fit (PAVI-E, PAVI-F or mean-field SVI) advanced one training step at a time.

    The steps are those of :func:`pavi_parcel.inference.training.fit_model`: the same minibatch
    draws, Adam, end-of-epoch theta prior refit.
    """

    def __init__(self, method: str, lr: float | None, setup, seed: int = 0):
        from race_eval import ClosedThetaMeanField

        from pavi_parcel.inference.optim import build_guide, make_optimizer
        from pavi_parcel.inference.passes import subject_pass
        from pavi_parcel.inference.state import TrainState
        from pavi_parcel.model.hierarchy import PlateScale

        self.store, self.source, model, fit, init, self.smask, self.evaluate = setup
        n_sub, n_ses = self.store.n_subjects, self.store.n_sessions
        self.fit = fit.replace(method=method, **({"lr": lr} if lr is not None else {}))
        if method == "svi":
            self.guide = ClosedThetaMeanField(init, n_sub, n_ses, model)
            start = build_guide(init, n_sub, n_ses, model, fit, seed)  # PAVI-E: the shared starting labels
            with torch.no_grad():
                for s in range(n_sub):
                    probs = torch.as_tensor(subject_pass(start, self.source, s, self.smask, update=False)[0])
                    self.guide.logits[s] = torch.log(probs.clamp_min(1e-30))
        else:
            self.guide = build_guide(init, n_sub, n_ses, model, self.fit, seed)
        self.opt = make_optimizer(self.guide, self.fit)
        self.seed, self.state = seed, TrainState()
        self.n_batch = min(self.fit.batch_subjects, n_sub)
        self.n_patch = len(self.guide.patches)
        self.scale = PlateScale(n_sub / self.n_batch, float(self.n_patch))
        self.n_obs = float(self.smask.sum()) * self.store.n_vertices
        self.steps_per_epoch = math.ceil(n_sub / self.n_batch) * self.n_patch

    def step(self) -> None:
        from pavi_parcel.inference.epochs import epoch_batch
        from pavi_parcel.inference.training import train_step

        subj, patch = epoch_batch(self.seed, self.state.epochs, self.state.epoch_n, self.store.n_subjects,
                                  self.n_batch, self.n_patch)
        terms = train_step(self.guide, self.opt, self.source, self.smask, subj, patch, self.scale, self.n_obs)
        self.state.record(float(terms.total), 0.0)
        if self.state.close_epoch(self.steps_per_epoch, self.fit.tol, self.fit.min_epochs):
            self.guide.refit_theta_prior()

    @property
    def steps(self) -> int:
        return self.state.step

    def score(self):
        return self.evaluate(self.guide)

    def parameters(self) -> dict:
        return self.guide.n_variational_parameters()


class PyroRacer:
    """Pyro's SVI on the same model and minibatches; scored through :func:`race_eval.complete_points`."""

    def __init__(self, lr: float, setup, seed: int = 0):
        from race_eval import ClosedThetaMeanField
        from race_pyro import PyroRace

        from pavi_parcel.inference.state import TrainState

        self.store, self.source, model, fit, self.init, self.smask, self.evaluate = setup
        n_sub, n_ses = self.store.n_subjects, self.store.n_sessions
        # the scoring guide; it also keeps theta's label counts from each step's label posterior
        self.shadow = ClosedThetaMeanField(self.init, n_sub, n_ses, model)
        start = self.shadow.subject_posterior(torch.arange(n_sub), self.smask)
        self.race = PyroRace(self.source, self.init, start, self.smask, lr, fit.batch_subjects)
        self.seed, self.state, self.fit = seed, TrainState(), fit
        self.n_batch = min(fit.batch_subjects, n_sub)
        self.n_patch = len(self.init.patches)
        self.steps_per_epoch = math.ceil(n_sub / self.n_batch) * self.n_patch
        self.lr = lr

    def step(self) -> None:
        from pavi_parcel.inference.epochs import epoch_batch

        subj, patch = epoch_batch(self.seed, self.state.epochs, self.state.epoch_n, self.store.n_subjects,
                                  self.n_batch, self.n_patch)
        loss, lam = self.race.step(subj, patch)
        a, b = self.init.patches[patch]
        self.shadow.update_labels(torch.as_tensor(subj), slice(a, b), lam)
        self.state.record(-loss, 0.0)
        self.state.close_epoch(self.steps_per_epoch, self.fit.tol, self.fit.min_epochs)

    @property
    def steps(self) -> int:
        return self.state.step

    def score(self):
        from race_eval import complete_points, load_state

        points = self.race.point_estimates()
        chosen = self.evaluate.subjects
        parts = [complete_points(points, self.source, self.smask, int(s), self.init.patches) for s in chosen]
        stack = {k: torch.stack([p[k] for p in parts]) for k in parts[0]}
        load_state(self.shadow, subjects=chosen, mu=points["mu"], kappa=float(points["kappa"]),
                   sigma=float(points["sigma"]), eps=float(points["eps"]), counts=self.shadow.counts.clone(), **stack)
        return self.evaluate(self.shadow)

    def parameters(self) -> dict:
        import pyro

        learned = sum(p.numel() for p in pyro.get_param_store().values())
        return {"learned": int(learned), "closed_form_theta": 0}


# --------------------------------------------------------------------------- one run, traced
def eval_schedule(budget: float, first: float = 0.5) -> list[float]:
    """Training times of the evaluations: ``first * sqrt(2)^i`` up to the budget (the budget included)."""
    times = list(first * 2.0 ** (0.5 * np.arange(int(2 * math.log2(budget / first)) + 1)))
    return [t for t in times if t < budget] + [budget]


def trace_row(seconds: float, steps: int, score) -> dict:
    return {"seconds": seconds, "steps": steps, "elbo": score.elbo, "se": score.se, "ari": score.ari,
            "per_subject": score.per_subject}


def converged_at(trace: list[dict], tolerance: float = GAIN_TOLERANCE) -> dict | None:
    """First evaluation at which doubling the training time changed the ELBO by < ``tolerance`` of the gain so far."""
    start = trace[0]["elbo"]
    for row in trace[1:]:
        gain = row["elbo"] - start
        earlier = [r for r in trace if r["seconds"] <= row["seconds"] / 2]
        # a falling ELBO has not converged: it runs on (to its budget) in case it recovers
        if earlier and earlier[-1]["seconds"] > 0 and gain > 0 \
                and abs(row["elbo"] - earlier[-1]["elbo"]) < tolerance * gain:
            return row
    return None


def advance(racer, trace: list[dict], budget: float, schedule: list[float], clock: list[float],
            stop_on_convergence: bool = True) -> None:
    """Train ``racer`` until ``budget`` training seconds (``clock[0]``, carried between calls) or convergence."""
    pending = [t for t in schedule if t > clock[0]]
    while clock[0] < budget and pending:
        t0 = time.perf_counter()
        racer.step()
        clock[0] += time.perf_counter() - t0
        if clock[0] >= pending[0]:
            while pending and pending[0] <= clock[0]:
                pending.pop(0)
            trace.append(trace_row(clock[0], racer.steps, racer.score()))
            if stop_on_convergence and converged_at(trace) is not None:
                return


def run_swept(make_racer, rates: list[float], sweep_seconds: float, budget: float, start_row: dict) -> dict:
    """Sweep learning rates for ``sweep_seconds`` each; continue the best one to convergence or budget."""
    schedule = eval_schedule(budget)
    runs = []

    def sweep_one(lr: float) -> dict:
        racer = make_racer(lr)
        own_start = racer.score().elbo
        trace, clock = [dict(start_row)], [0.0]
        advance(racer, trace, sweep_seconds, schedule, clock, stop_on_convergence=False)
        print(f"  lr {lr:g}: ELBO {trace[-1]['elbo']:.6g} at {clock[0]:.0f} s, ARI {trace[-1]['ari']:.3f}", flush=True)
        return {"lr": lr, "racer": racer, "trace": trace, "clock": clock, "own_start": own_start}

    def at_end(run: dict) -> float:
        return run["trace"][-1]["elbo"] if math.isfinite(run["trace"][-1]["elbo"]) else -math.inf

    runs = [sweep_one(lr) for lr in rates]
    # a winner at an edge of the grid: extend the grid past it by the grid's own ratio (twice at most)
    ratio = (max(rates) / min(rates)) ** (1 / max(len(rates) - 1, 1)) if len(rates) > 1 else 3.0
    for _ in range(2):
        best = max(runs, key=at_end)
        edge = [r["lr"] for r in runs]
        if best["lr"] == min(edge):
            runs.append(sweep_one(best["lr"] / ratio))
        elif best["lr"] == max(edge):
            runs.append(sweep_one(best["lr"] * ratio))
        else:
            break
        for r in runs:  # keep only the leader's state in memory
            if r is not best and r is not runs[-1]:
                r.pop("racer", None)
    best = max(runs, key=at_end)
    for r in runs:
        if r is not best:
            r.pop("racer", None)
    if converged_at(best["trace"]) is None:
        advance(best["racer"], best["trace"], budget, schedule, best["clock"])
    sweep = [{"lr": r["lr"], "elbo_at_sweep_end": r["trace"][-1]["elbo"] if r is not best else
              next(x["elbo"] for x in reversed(r["trace"]) if x["seconds"] <= sweep_seconds + 1e-9)}
             for r in runs]
    return {"lr": best["lr"], "trace": best["trace"], "steps": best["racer"].steps,
            "train_seconds": best["clock"][0], "params": best["racer"].parameters(), "sweep": sweep,
            "steps_per_epoch": best["racer"].steps_per_epoch, "own_start_elbo": best["own_start"]}


def run_vbem(setup, budget: float, start_row: dict | None = None) -> dict:
    """VB-EM from the shared k-means labels; its state scored after every iteration's E-step.

    ``start_row``: the common start's score, first in the trace (the convergence rule measures gains from it).
    """
    from race_eval import ClosedThetaMeanField, load_state

    from pavi_parcel.model.baselines import ParcellationResult, fit_vbem

    store, source, model, fit, init, smask, evaluate = setup
    labels = init.initial_labels(N_NETWORKS)
    start = ParcellationResult(subject_probs=labels[None], group_probs=labels, group_profiles=np.asarray(init.mu))
    scorer = ClosedThetaMeanField(init, store.n_subjects, store.n_sessions, model)
    chosen = torch.as_tensor(evaluate.subjects)
    trace: list[dict] = [] if start_row is None else [dict(start_row)]
    excluded = [0.0]
    t_start = time.perf_counter()

    def on_state(st) -> None:
        t0 = time.perf_counter()
        seconds = t0 - t_start - excluded[0]
        load_state(scorer, lam=st.lam[chosen], subjects=evaluate.subjects, m_psi=st.m_psi[chosen],
                   k_psi=st.k_psi[chosen],
                   m_nu=st.m_nu[chosen], k_nu=st.k_nu[chosen], mu=st.mu, kappa=float(st.kappa),
                   sigma=float(st.sigma[0]), eps=float(st.eps[0]), counts=st.lam.double().sum(0))
        trace.append(trace_row(seconds, trace[-1]["steps"] + 1 if trace else 1, evaluate(scorer)))
        excluded[0] += time.perf_counter() - t0
        if seconds >= budget or (len(trace) > 1 and converged_at(trace) is not None):
            raise StopRace

    try:
        fit_vbem(store, N_NETWORKS, init=start, max_iter=10_000, tol=0.0, theta_prior=1.0,
                 pooled_concentrations=True, on_state=on_state)
    except StopRace:
        pass
    n_sub, n_ses, n_vert, d = store.n_subjects, store.n_sessions, store.n_vertices, store.n_seeds
    params = {"learned": 0, "closed_form_theta": n_vert * N_NETWORKS,
              "closed_form_local": n_sub * n_vert * N_NETWORKS + n_sub * (n_ses + 1) * N_NETWORKS * (d + 1)}
    return {"trace": trace, "steps": trace[-1]["steps"], "train_seconds": trace[-1]["seconds"], "params": params,
            "steps_per_epoch": 1}


def run_method(store_path: Path, truth_dir: Path, method: str, args) -> dict:
    """One method on one cohort, from the shared start; the result row of the race."""
    torch.set_num_threads(args.threads)
    setup = race_setup(store_path, truth_dir, args.eval_subjects)
    pavi_start = GradientRacer("pavi_e", None, setup)
    start_row = trace_row(0.0, 0, pavi_start.score())  # the common start every trace begins from
    del pavi_start
    if method in ("pavi_e", "pavi_f"):
        racer = GradientRacer(method, None, setup)
        trace, clock = [trace_row(0.0, 0, racer.score())], [0.0]
        advance(racer, trace, args.budget, eval_schedule(args.budget), clock)
        out = {"lr": racer.fit.lr, "trace": trace, "steps": racer.steps, "train_seconds": clock[0],
               "params": racer.parameters(), "steps_per_epoch": racer.steps_per_epoch}
    elif method == "svi":
        out = run_swept(lambda lr: GradientRacer("svi", lr, setup), args.svi_rates, args.sweep_seconds, args.budget,
                        start_row)
    elif method == "pyro":
        out = run_swept(lambda lr: PyroRacer(lr, setup), args.pyro_rates, args.sweep_seconds, args.budget, start_row)
    elif method == "vbem":
        out = run_vbem(setup, args.budget, start_row)
    else:
        raise ValueError(method)
    store = setup[0]
    out.update(method=method, n_subjects=store.n_subjects, eval_subjects=len(setup[-1].subjects),
               start_elbo=start_row["elbo"], threads=args.threads, budget=args.budget)
    store.close()
    return out


# --------------------------------------------------------------------------- command
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--out", type=Path, default=Path("race"))
    p.add_argument("--data-root", type=Path, default=Path("race_data"))
    p.add_argument("--budget", type=float, nargs="+", default=[240.0, 480.0],
                   help="training-second cap per run, one per size (the last repeats)")
    p.add_argument("--sweep-seconds", type=float, nargs="+", default=[30.0, 60.0],
                   help="training seconds of each swept rate, one per size (the last repeats)")
    p.add_argument("--svi-rates", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3])
    p.add_argument("--pyro-rates", type=float, nargs="+", default=[0.001, 0.003, 0.01, 0.03])
    p.add_argument("--eval-subjects", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report-only", action="store_true", help="rebuild the report from OUT/bench_race.json")
    p.add_argument("--worker", nargs=3, metavar=("STORE", "TRUTH", "METHOD"))
    args = p.parse_args()
    if args.worker:
        args.budget, args.sweep_seconds = args.budget[0], args.sweep_seconds[0]
        store, truth, method = args.worker
        print(json.dumps(run_method(Path(store), Path(truth), method, args), default=float))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "bench_race.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if args.report_only:
        from race_report import write_report

        write_report(results, args.out, results.get("command", ""))
        return
    results["command"] = "python scripts/bench_race.py " + " ".join(sys.argv[1:])
    for i, n in enumerate(args.sizes):
        budget = args.budget[min(i, len(args.budget) - 1)]
        sweep = args.sweep_seconds[min(i, len(args.sweep_seconds) - 1)]
        folder = args.data_root / f"n{n}"
        store = folder / "fp.h5"
        if not store.exists():
            from pavi_parcel.simulate import simulate_fingerprint_store

            simulate_fingerprint_store(store, n, 2, N_NETWORKS, seed=0, truth_dir=folder / "truth", progress=True)
        cohort = results.setdefault(str(n), {})
        for method in args.methods:
            print(f"{n} subjects: {method}", flush=True)
            cmd = [sys.executable, __file__, "--worker", str(store), str(folder / "truth"), method,
                   "--budget", str(budget), "--sweep-seconds", str(sweep), "--eval-subjects", str(args.eval_subjects),
                   "--threads", str(args.threads), "--svi-rates", *map(str, args.svi_rates),
                   "--pyro-rates", *map(str, args.pyro_rates)]
            proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{method} at {n} subjects failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["peak_rss_gb"] = int(proc.stderr.strip().splitlines()[-1]) / 2**20
            cohort[method] = row
            results_path.write_text(json.dumps(results, indent=1, default=float))
    from race_report import write_report

    write_report(results, args.out, results["command"])


if __name__ == "__main__":
    main()
