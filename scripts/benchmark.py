"""The benchmark suite in one command: simulated cohorts, every method side by side -> docs/benchmarks.md.

Usage::

    python scripts/benchmark.py                       # full suite (about 4 h on 2 cores, half of it the
                                                      # 1,000-subject fits), docs/benchmarks.md
    python scripts/benchmark.py --quick               # tiny version of every section (plumbing check)
    python scripts/benchmark.py --sections elbo scale # rerun some sections; the report is rebuilt from all
    python scripts/benchmark.py --report-only         # rebuild the report from the saved section results

Sections (each saves ``OUT/results/<section>.json``; the report is assembled from every saved
section, so a partial rerun still regenerates the whole report):

``snr``      accuracy (ARI, Dice) and calibration (ECE) of the individual maps versus the SNR of
             directly simulated fingerprints: PAVI-E, PAVI-F, VB-EM, group k-means (SVI at one level);
``minutes``  the same versus minutes of fMRI per subject, through the real pipeline: simulated
             fMRIPrep-like BIDS -> ``pavi-parcel fit`` (ingest, fingerprints, fit, export), whose
             wall time is the end-to-end time; VB-EM and k-means on the pipeline's fingerprints;
``elbo``     ELBO versus training time of PAVI-E, PAVI-F and mean-field SVI (VB-EM on its own
             objective), times to 90 % and 99 % of SVI's ELBO gain, speed ratios, parameter counts;
``scale``    time and peak memory of PAVI-E versus the number of subjects (fingerprints simulated
             directly); above ``--scale-full-max`` subjects the training loop is capped and the full
             fit time is estimated from the measured time per epoch and per output pass;
``smoothing`` accuracy, ECE, time and memory of PAVI-E and VB-EM with and without the Potts prior
             (``model.potts_beta=0`` / ``auto``, and the chosen beta) across SNR, deviation-field
             smoothness, 1 / 2 / 3 sessions and an MNI volume, through the real pipeline's
             fingerprints, and the time of both PAVI-E fits side by side (``scripts/bench_smoothing.py``).

Every fit runs in its own process (``python scripts/benchmark.py _fit SPEC.json``, or the
``pavi-parcel`` command): wall time and peak resident memory (``wait4``'s ``ru_maxrss``: the largest
process of the fit's process tree) are per fit. Seeds are fixed (simulation and fit seed 0), so
accuracy numbers repeat exactly on the same software; times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_smoothing  # noqa: E402  (the scripts folder is on the path from here on)

SECTIONS = ("snr", "minutes", "elbo", "scale", "smoothing")
SEED = 0
PRESETS = {
    "full": {
        "snr": dict(n_subjects=20, n_sessions=2, n_networks=17, n_seeds=None, levels=[0.4, 0.8, 1.6],
                    methods=["pavi_e", "pavi_f", "vbem", "kmeans"], svi_level=0.8,
                    fit={"max_minutes": 20.0, "num_threads": 1}, svi_fit={"max_steps": 400, "num_threads": 1}),
        "minutes": dict(n_subjects=10, n_sessions=2, n_networks=17, minutes=[5, 10, 20], tr=2.0, snr=0.3,
                        methods=["vbem", "kmeans"], overrides=["fit.num_threads=1"], fit={"num_threads": 1}),
        "elbo": dict(sizes=[10, 100, 1000], n_networks=17, n_seeds=None,
                     svi_seconds={"10": 90, "100": 480, "1000": 600},
                     n_evals=16, eval_subjects=3, lr=0.02, svi_lr=0.05, vbem_max_iter=5, match_start_max=1000,
                     pavi_f_max_subjects=100, vbem_max_subjects=100, calibration="none", threads=1),
        "scale": dict(sizes=[10, 100, 1000], n_networks=17, n_seeds=None, full_fit_max=1000, cap_minutes=5.0,
                      pass_subjects=5, threads=1, store_jobs=2, fit={"max_steps": 10000, "max_minutes": 120}),
        "smoothing": dict(bench_smoothing.FULL),
    },
    "quick": {
        "snr": dict(n_subjects=4, n_sessions=2, n_networks=7, n_seeds=150, levels=[0.5, 1.6],
                    methods=["pavi_e", "pavi_f", "vbem", "kmeans"], svi_level=1.6,
                    fit={"max_steps": 12, "num_threads": 1}, svi_fit={"max_steps": 12, "num_threads": 1}),
        "minutes": dict(n_subjects=3, n_sessions=2, n_networks=7, minutes=[3], tr=2.0, snr=0.3,
                        methods=["vbem", "kmeans"], overrides=["fit.max_steps=10", "fit.num_threads=1"],
                        fit={"num_threads": 1, "max_iter": 3}),
        "elbo": dict(sizes=[4, 8], n_networks=7, n_seeds=150, svi_seconds={"4": 6, "8": 8}, n_evals=4,
                     eval_subjects=2, lr=0.02, svi_lr=0.05, vbem_max_iter=3, match_start_max=100,
                     pavi_f_max_subjects=8, vbem_max_subjects=8, calibration="none", threads=1),
        "scale": dict(sizes=[4, 8, 16], n_networks=7, n_seeds=150, full_fit_max=8, cap_minutes=0.15,
                      pass_subjects=2, threads=1, store_jobs=2, fit={"max_steps": 12}),
        "smoothing": dict(bench_smoothing.QUICK),
    },
}


# --------------------------------------------------------------------------- child processes
def _child(spec_path: str) -> None:
    """Body of ``benchmark.py _fit SPEC``: one fit in this process, its result as JSON."""
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("threads", 0) > 0:
        import torch

        torch.set_num_threads(int(spec["threads"]))
    kind = spec["kind"]
    if kind == "fit":
        from bench_accuracy import fit_to_posterior

        from pavi_parcel.stores.posterior import read_posterior

        path = fit_to_posterior(spec["method"], Path(spec["store"]), Path(spec["model_dir"]), spec["n_networks"],
                                spec.get("fit"), SEED)
        attrs = read_posterior(path, subjects=False).attrs
        result = {k: attrs.get(k) for k in ("n_steps", "seconds", "converged", "n_variational_parameters")}
    elif kind == "trace":
        from bench_speed import trace_fit

        result = trace_fit(**spec["kwargs"])
    elif kind == "vbem_trace":
        from bench_speed import vbem_trace

        result = vbem_trace(**spec["kwargs"])
    else:
        raise ValueError(f"unknown child kind {kind!r}")
    Path(spec["result"]).write_text(json.dumps(result, default=float))


def _command(spec: dict, folder: Path) -> list[str]:
    if spec["kind"] == "cli":
        return list(spec["argv"])
    path = folder / f"{spec['name']}.spec.json"
    spec["result"] = str(folder / f"{spec['name']}.result.json")
    path.write_text(json.dumps(spec))
    return [sys.executable, str(Path(__file__).resolve()), "_fit", str(path)]


def _env(threads: int) -> dict:
    env = dict(os.environ)
    if threads > 0:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[key] = str(threads)
    return env


def run_children(specs: list[dict], folder: Path, jobs: int = 1) -> list[dict]:
    """Run ``specs`` as child processes, ``jobs`` at a time; wall time and peak RSS of each.

    Returns, in the order of ``specs``: ``{"name", "ok", "wall_s", "peak_rss_gb", "result", "log"}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pending, running, done = list(enumerate(specs)), {}, {}
    try:
        _drive(pending, running, done, folder, jobs)
    finally:  # interrupted: stop the fits still running, leave nothing behind
        for _, _, proc, _, _ in running.values():
            proc.terminate()
        for _, _, proc, _, _ in running.values():
            proc.wait()
    return [done[i] for i in range(len(specs))]


def _drive(pending: list, running: dict, done: dict, folder: Path, jobs: int) -> None:
    while pending or running:
        while pending and len(running) < max(1, jobs):
            i, spec = pending.pop(0)
            log = folder / f"{spec['name']}.log"
            with log.open("w") as fh:
                proc = subprocess.Popen(_command(spec, folder), stdout=fh, stderr=subprocess.STDOUT,
                                        env=_env(int(spec.get("threads", 0))), cwd=str(HERE.parent))
            running[proc.pid] = (i, spec, proc, time.perf_counter(), log)
            print(f"  start {spec['name']}", flush=True)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        i, spec, proc, t0, log = running.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out = {"name": spec["name"], "ok": proc.returncode == 0, "wall_s": time.perf_counter() - t0,
               "peak_rss_gb": usage.ru_maxrss / 2**20, "log": str(log), "result": None}
        if out["ok"] and spec["kind"] != "cli":
            out["result"] = json.loads(Path(spec["result"]).read_text())
        if not out["ok"]:
            tail = log.read_text().strip().splitlines()[-3:]
            out["error"] = " / ".join(tail)[-400:]
            print(f"  FAILED {spec['name']} (exit {proc.returncode}); see {log}", flush=True)
        else:
            print(f"  done  {spec['name']}: {out['wall_s']:.0f} s, {out['peak_rss_gb']:.2f} GB", flush=True)
        done[i] = out


# --------------------------------------------------------------------------- simulated data
def store_folder(out: Path, n_subjects: int, n_networks: int, snr: float, n_seeds: int | None = None) -> Path:
    """Where :func:`ensure_store` caches a simulated store with these settings."""
    return out / "stores" / (f"n{n_subjects}_k{n_networks}_snr{snr:g}" + (f"_d{n_seeds}" if n_seeds else ""))


def ensure_store(out: Path, n_subjects: int, n_networks: int, snr: float | None = None, n_seeds: int | None = None,
                 n_jobs: int = 2) -> dict:
    """A directly simulated fingerprint store (cached by settings); its truth and simulation time."""
    from pavi_parcel.simulate import DEFAULT_FINGERPRINT_SNR, simulate_fingerprint_store

    snr = DEFAULT_FINGERPRINT_SNR if snr is None else snr
    folder = store_folder(out, n_subjects, n_networks, snr, n_seeds)
    store = folder / "fingerprints.h5"
    meta_path = folder / "store_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta is None:
        print(f"  simulating a fingerprint store: {n_subjects} subjects, SNR {snr:g} (n_jobs={n_jobs})", flush=True)
    t0 = time.perf_counter()
    truth = simulate_fingerprint_store(store, n_subjects, 2, n_networks, seed=SEED, snr=snr, n_seeds=n_seeds,
                                       truth_dir=folder / "truth", n_jobs=n_jobs, progress=False)
    seconds = time.perf_counter() - t0
    if meta is None or meta.get("settings") != _store_settings(truth):
        meta = {"settings": _store_settings(truth), "seconds": seconds, "n_jobs": n_jobs,
                "bytes": store.stat().st_size}
        meta_path.write_text(json.dumps(meta))
    return {"store": store, "truth": folder / "truth", "seconds": meta["seconds"], "bytes": meta["bytes"],
            "n_jobs": meta["n_jobs"], "snr": snr}


def _store_settings(truth) -> dict:
    keep = ("seed", "n_subjects", "n_sessions", "n_networks", "n_seeds", "snr", "deviation", "version")
    return {k: truth.settings.get(k) for k in keep}


def ensure_bids(folder: Path, n_subjects: int, n_sessions: int, n_frames: int, tr: float, snr: float,
                n_networks: int) -> Path:
    """A simulated fMRIPrep-like BIDS dataset under ``folder/sim`` (kept when the settings match)."""
    from pavi_parcel.simulate import simulate_dataset


    settings = dict(n_subjects=n_subjects, n_sessions=n_sessions, n_frames=n_frames, tr=tr, snr=snr,
                    n_networks=n_networks, seed=SEED)
    marker = folder / "sim_settings.json"
    if not (marker.exists() and json.loads(marker.read_text()) == settings):
        marker.unlink(missing_ok=True)
        simulate_dataset(folder / "sim", n_subjects=n_subjects, n_sessions=n_sessions, n_frames=n_frames, tr=tr,
                         snr=snr, n_networks=n_networks, seed=SEED, progress=False)
        marker.write_text(json.dumps(settings))
    return folder / "sim"


def score(posterior_path: Path, truth_dir: Path) -> dict:
    """Cohort-mean truth metrics of a fitted posterior."""
    from bench_accuracy import summarize

    from pavi_parcel.simulate.truth import load_truth
    from pavi_parcel.stores.posterior import read_posterior

    return summarize(read_posterior(posterior_path), load_truth(truth_dir))


def _fit_spec(name: str, method: str, store: Path, model_dir: Path, k: int, fit: dict) -> dict:
    shutil.rmtree(model_dir, ignore_errors=True)  # a fresh fit, never a resumed one
    fit = dict(fit) if method != "kmeans" else {}
    if method == "vbem":
        fit = {k: v for k, v in fit.items() if k in ("max_iter", "tol")}
    return {"kind": "fit", "name": name, "method": method, "store": str(store), "model_dir": str(model_dir),
            "n_networks": k, "fit": fit, "threads": int((fit or {}).get("num_threads", 1) or 1)}


def _row(outcome: dict, **extra) -> dict:
    row = {"wall_s": outcome["wall_s"], "peak_rss_gb": outcome["peak_rss_gb"], "ok": outcome["ok"], **extra}
    if not outcome["ok"]:
        row["error"] = outcome.get("error", "")
    return row


# --------------------------------------------------------------------------- sections
def section_snr(cfg: dict, out: Path, jobs: int) -> dict:
    """Accuracy and calibration versus the SNR of directly simulated fingerprints."""
    stores, specs = {}, []
    for level in cfg["levels"]:
        stores[level] = ensure_store(out, cfg["n_subjects"], cfg["n_networks"], level, cfg["n_seeds"])
        for method in cfg["methods"]:
            specs.append(_fit_spec(f"snr{level:g}_{method}", method, stores[level]["store"],
                                   out / "snr" / f"snr{level:g}" / method, cfg["n_networks"], cfg["fit"]))
    if cfg.get("svi_level") is not None:
        level = cfg["svi_level"]
        specs.append(_fit_spec(f"snr{level:g}_svi", "svi", stores[level]["store"],
                               out / "snr" / f"snr{level:g}" / "svi", cfg["n_networks"], cfg["svi_fit"]))
    rows = []
    for spec, outcome in zip(specs, run_children(specs, out / "logs" / "snr", jobs)):
        level = float(spec["name"].split("_")[0][3:])
        row = _row(outcome, snr=level, method=spec["method"])
        if outcome["ok"]:
            row.update(score(Path(spec["model_dir"]) / "posterior.h5", stores[level]["truth"]))
            row.update(outcome["result"] or {})
        rows.append(row)
    return {"rows": rows, "jobs": jobs}


def section_minutes(cfg: dict, out: Path, jobs: int) -> dict:
    """Accuracy versus minutes of fMRI per subject through the real pipeline; end-to-end time."""
    exe = shutil.which("pavi-parcel")
    base = [exe] if exe else [sys.executable, "-c", "from pavi_parcel.cli import main; main()"]
    rows = []
    for minutes in cfg["minutes"]:
        n_frames = int(round(minutes * 60 / cfg["tr"]))
        folder = out / "minutes" / f"{minutes:g}min"
        t0 = time.perf_counter()
        sim = ensure_bids(folder, cfg["n_subjects"], cfg["n_sessions"], n_frames, cfg["tr"], cfg["snr"],
                          cfg["n_networks"])
        sim_seconds = time.perf_counter() - t0
        pavi_out = folder / "pavi"
        shutil.rmtree(pavi_out, ignore_errors=True)
        argv = base + ["fit", str(sim / "bids"), str(pavi_out), "--n-networks", str(cfg["n_networks"]),
                       "--device", "cpu", f"seed={SEED}", *cfg["overrides"]]
        [e2e] = run_children([{"kind": "cli", "name": f"{minutes:g}min_pipeline", "argv": argv, "threads": 0}],
                             out / "logs" / "minutes")
        common = dict(minutes_per_session=minutes, minutes_per_subject=minutes * cfg["n_sessions"],
                      n_frames=n_frames)
        row = _row(e2e, method="pavi_e", end_to_end=True, simulation_s=sim_seconds, **common)
        if e2e["ok"]:
            row.update(score(pavi_out / "model" / "posterior.h5", sim / "truth"))
        rows.append(row)
        store = pavi_out / "work" / "fingerprints.h5"
        if not store.exists():
            continue
        specs = [_fit_spec(f"{minutes:g}min_{m}", m, store, folder / m, cfg["n_networks"], cfg["fit"])
                 for m in cfg["methods"]]
        for spec, outcome in zip(specs, run_children(specs, out / "logs" / "minutes", jobs)):
            row = _row(outcome, method=spec["method"], end_to_end=False, **common)
            if outcome["ok"]:
                row.update(score(Path(spec["model_dir"]) / "posterior.h5", sim / "truth"))
                row.update(outcome["result"] or {})
            rows.append(row)
    return {"rows": rows, "command_template": "pavi-parcel fit BIDS OUT --n-networks K --device cpu seed=0"}


def section_elbo(cfg: dict, out: Path, jobs: int) -> dict:
    """ELBO versus training time; times to 90 / 99 % of SVI's gain; parameter counts."""
    from bench_speed import speed_summary, vbem_summary

    sizes = []
    for n in cfg["sizes"]:
        store = ensure_store(out, n, cfg["n_networks"], None, cfg["n_seeds"])
        folder = out / "elbo" / f"n{n}"
        folder.mkdir(parents=True, exist_ok=True)
        init = folder / "init.pt"
        init.unlink(missing_ok=True)
        budget = float(cfg["svi_seconds"].get(str(n), max(cfg["svi_seconds"].values())))
        common = dict(store_path=str(store["store"]), budget=budget, n_evals=cfg["n_evals"],
                      eval_subjects=cfg["eval_subjects"], init_path=str(init), n_networks=cfg["n_networks"],
                      seed=SEED, threads=cfg["threads"])
        logs = out / "logs" / "elbo"
        [svi] = run_children([{"kind": "trace", "name": f"n{n}_svi", "threads": cfg["threads"], "kwargs": dict(
            common, method="svi", lr=cfg["svi_lr"], match_start=n <= cfg["match_start_max"])}], logs)
        runs = {"svi": svi}
        if svi["ok"]:
            tr = svi["result"]["trace"]
            target = tr[0][2] + 0.995 * (max(e for _, _, e in tr) - tr[0][2])
            for method in ("pavi_e", "pavi_f")[:1 if n > cfg["pavi_f_max_subjects"] else 2]:
                [runs[method]] = run_children([{"kind": "trace", "name": f"n{n}_{method}", "threads": cfg["threads"],
                                                "kwargs": dict(common, method=method, lr=cfg["lr"], target=target,
                                                               calibration=cfg["calibration"])}],
                                              logs)
        if n <= cfg["vbem_max_subjects"]:  # its own objective: a reference curve, not part of the ratio
            [runs["vbem"]] = run_children([{"kind": "vbem_trace", "name": f"n{n}_vbem", "threads": cfg["threads"],
                                            "kwargs": dict(store_path=str(store["store"]),
                                                           n_networks=cfg["n_networks"],
                                                           max_iter=cfg["vbem_max_iter"], seed=SEED,
                                                           threads=cfg["threads"])}], logs)
        ok = {m: r["result"] for m, r in runs.items() if r["ok"]}
        entry = {"n_subjects": n, "budget": budget,
                 "runs": {m: dict(r["result"] or {}, wall_s=r["wall_s"], peak_rss_gb_process=r["peak_rss_gb"],
                                  ok=r["ok"], error=r.get("error")) for m, r in runs.items()},
                 "matched_start": n <= cfg["match_start_max"]}
        if "svi" in ok:
            entry["summary"] = speed_summary({m: ok[m] for m in ok if m != "vbem"})
        if "vbem" in ok:
            entry["vbem_summary"] = vbem_summary(ok["vbem"])
        sizes.append(entry)
    return {"sizes": sizes}


def section_scale(cfg: dict, out: Path, jobs: int) -> dict:
    """Time and peak memory of PAVI-E versus the number of subjects."""
    from pavi_parcel.inference.stream import make_patches
    from pavi_parcel.settings.schema import FitSettings
    from pavi_parcel.stores.fingerprints import FingerprintStore

    rows = []
    for n in cfg["sizes"]:
        store = ensure_store(out, n, cfg["n_networks"], None, cfg["n_seeds"], n_jobs=cfg["store_jobs"])
        with FingerprintStore(store["store"]) as fs:
            shape = dict(n_vertices=fs.n_vertices, n_seeds=fs.n_seeds, n_sessions=fs.n_sessions)
        n_patch = len(make_patches(shape["n_vertices"], FitSettings().batch_vertices))
        steps_per_epoch = math.ceil(n / min(FitSettings().batch_subjects, n)) * n_patch
        base = dict(n_subjects=n, store_gb=store["bytes"] / 2**30, store_seconds=store["seconds"],
                    store_jobs=store["n_jobs"], steps_per_epoch=steps_per_epoch, **shape)
        if n <= cfg["full_fit_max"]:
            spec = _fit_spec(f"n{n}_pavi_e", "pavi_e", store["store"], out / "scale" / f"n{n}", cfg["n_networks"],
                             {**cfg.get("fit", {}), "num_threads": cfg["threads"]})
            spec["threads"] = cfg["threads"]
            [res] = run_children([spec], out / "logs" / "scale")
            row = _row(res, mode="full fit", **base)
            if res["ok"]:
                r = res["result"]
                row.update(steps=r["n_steps"], train_seconds=r["seconds"], converged=r["converged"],
                           params=r["n_variational_parameters"], epochs=r["n_steps"] / steps_per_epoch)
                row.update(score(out / "scale" / f"n{n}" / "posterior.h5", store["truth"]))  # ECE at every scale
        else:
            init = out / "scale" / f"n{n}" / "init.pt"
            init.parent.mkdir(parents=True, exist_ok=True)
            init.unlink(missing_ok=True)
            spec = {"kind": "trace", "name": f"n{n}_pavi_e_capped", "threads": cfg["threads"], "kwargs": dict(
                store_path=str(store["store"]), method="pavi_e", budget=60.0 * cfg["cap_minutes"], n_evals=0,
                init_path=str(init), n_networks=cfg["n_networks"], seed=SEED, threads=cfg["threads"],
                pass_subjects=cfg["pass_subjects"])}
            [res] = run_children([spec], out / "logs" / "scale")
            row = _row(res, mode="capped training", cap_minutes=cfg["cap_minutes"], **base)
            if res["ok"]:
                r = res["result"]
                row.update(steps=r["steps"], train_seconds=r["train_seconds"], params=r["params"],
                           epochs=r["steps"] / steps_per_epoch, init_seconds=r["init_seconds"],
                           pass_seconds_per_subject=r["pass_seconds_per_subject"],
                           calibration_seconds=r.get("calibration_seconds"))
        rows.append(row)
    _estimate_capped(rows, cfg["n_networks"])
    return {"rows": rows}


def _estimate_capped(rows: list[dict], k: int) -> None:
    """Full-fit time and peak memory of capped rows, from the measured rates (labelled estimates)."""
    full = [r for r in rows if r["mode"] == "full fit" and r.get("steps")]
    epochs_ref = max([r["epochs"] for r in full], default=4.0)
    for r in rows:
        if r["mode"] != "capped training" or not r.get("steps"):
            continue
        step_s = r["train_seconds"] / r["steps"]
        calib = r.get("calibration_seconds") or 0.0
        r["seconds_per_epoch"] = r["steps_per_epoch"] * step_s + calib
        r["epochs_assumed"] = math.ceil(epochs_ref)
        r["est_full_fit_s"] = (r["init_seconds"] + r["epochs_assumed"] * r["seconds_per_epoch"]
                               + r["n_subjects"] * (r["pass_seconds_per_subject"] or 0.0) + calib)
        r["posterior_array_gb"] = r["n_subjects"] * r["n_vertices"] * k * 4 / 2**30
        r["est_peak_gb"] = r["peak_rss_gb"] + r["posterior_array_gb"]
    for r in full:
        r["seconds_per_epoch"] = r["train_seconds"] / max(r["epochs"], 1e-9)


def section_smoothing(cfg: dict, out: Path, jobs: int) -> dict:
    """Potts smoothing and calibration across cohorts and designs (``scripts/bench_smoothing.py``).

    Fits run one at a time whatever ``jobs`` says: the section times them side by side.
    """
    return bench_smoothing.measure(cfg, out / "smoothing")


RUNNERS = {"snr": section_snr, "minutes": section_minutes, "elbo": section_elbo, "scale": section_scale,
           "smoothing": section_smoothing}


# --------------------------------------------------------------------------- provenance
def machine() -> dict:
    """CPU, memory and software versions of this machine."""
    import numpy
    import torch

    import pavi_parcel

    model = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) / 2**20 for line in _read("/proc/meminfo").splitlines()
                if line.startswith("MemTotal")), float("nan"))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=HERE.parent).stdout.strip()
        # the report's own outputs and the work folder are not code
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", ".", ":!docs/benchmarks*", ":!bench_out"],
                                    capture_output=True, text=True, cwd=HERE.parent).stdout.strip())
    except OSError:
        commit, dirty = "", False
    return {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "memory_gb": round(mem, 1), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "pavi_parcel": pavi_parcel.__version__,
            "git": commit + ("+uncommitted changes" if dirty else ""), "load_average": os.getloadavg()}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def save_json(path: Path, payload: dict) -> None:
    from pavi_parcel.io.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, default=str))


def load_results(out: Path) -> dict:
    """Every saved section result under ``out/results``, by section name."""
    found = {}
    for name in SECTIONS:
        path = out / "results" / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


PER_SIZE = {"elbo": "sizes", "scale": "rows"}  # sections whose entries are one cohort size each


def keep_other_sizes(payload: dict, previous: dict | None) -> None:
    """Carry over ``previous``'s entries for cohort sizes this run did not measure.

    A rerun of the elbo or scale section at some sizes (``--set scale.sizes=[1000]``) then updates
    those sizes and keeps the others. Every entry records the command and date that measured it.
    """
    key = PER_SIZE.get(payload["section"])
    if key is None:
        return
    for entry in payload[key]:
        entry.update(command=payload["command"], started=payload["started"], git=payload["machine"].get("git"))
    if previous is None or previous.get("preset") != payload["preset"]:
        return
    measured = {e["n_subjects"] for e in payload[key]}
    kept = [dict(e, command=e.get("command", previous["command"]), started=e.get("started", previous["started"]),
                 git=e.get("git", previous.get("machine", {}).get("git")))
            for e in previous.get(key, []) if e["n_subjects"] not in measured]
    payload[key] = sorted(payload[key] + kept, key=lambda e: e["n_subjects"])
    if kept:
        payload["kept_from_earlier_runs"] = sorted({(e["command"], e["started"]) for e in kept})


def score_saved_scale_fits(out: Path) -> None:
    """Score the saved full fits of the scale section that have no ARI / ECE yet (from older runs)."""
    path = out / "results" / "scale.json"
    payload = json.loads(path.read_text())
    for row in payload["rows"]:
        posterior = out / "scale" / f"n{row['n_subjects']}" / "posterior.h5"
        if row.get("mode") == "full fit" and row.get("ok") and "ari" not in row and posterior.exists():
            from pavi_parcel.simulate import DEFAULT_FINGERPRINT_SNR


            cfg = payload["config"]
            store = store_folder(out, row["n_subjects"], cfg["n_networks"], DEFAULT_FINGERPRINT_SNR, cfg["n_seeds"])
            row.update(score(posterior, store / "truth"), scored_afterwards=True)
            print(f"  scored n{row['n_subjects']}: ARI {row['ari']:.3f}, ECE {row['ece']:.3f}", flush=True)
    save_json(path, payload)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_fit"]:
        _child(argv[1])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="work folder (default bench_out/full or bench_out/quick)")
    p.add_argument("--quick", action="store_true", help="tiny versions of every section (a few minutes)")
    p.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--jobs", type=int, default=2, help="fits run at a time in the accuracy sections (snr, minutes)")
    p.add_argument("--report", type=Path, help="report path (default docs/benchmarks.md, or OUT/benchmarks.md "
                                                "with --quick); plots go next to it")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the saved results")
    p.add_argument("--score-saved", action="store_true", help="score saved scale-section fits that have no "
                                                              "ARI / ECE yet, then rebuild the report")
    p.add_argument("--scale-full-max", type=int, help="largest cohort of the scale section fitted in full "
                                                      "(larger ones: capped training + estimate)")
    p.add_argument("--scale-cap-minutes", type=float, help="training cap of the capped scale fits")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=JSON",
                   help="override a preset value, e.g. --set scale.sizes=[10,100] --set elbo.svi_seconds="
                        "'{\"10\":60,\"100\":120}' (recorded in the section's results)")
    args = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up of run_children
    preset = "quick" if args.quick else "full"
    out = (args.out or Path("bench_out") / preset).resolve()
    report = args.report or (out / "benchmarks.md" if args.quick else HERE.parent / "docs" / "benchmarks.md")
    config = json.loads(json.dumps(PRESETS[preset]))
    if args.scale_full_max is not None:
        config["scale"]["full_fit_max"] = args.scale_full_max
    if args.scale_cap_minutes is not None:
        config["scale"]["cap_minutes"] = args.scale_cap_minutes
    for item in args.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        if section not in config or name not in config[section]:
            known = ", ".join(f"{s}.{k}" for s in config for k in config[s])
            p.error(f"--set {item}: unknown key {key!r} (keys: {known})")
        config[section][name] = json.loads(value)
    if args.score_saved:
        score_saved_scale_fits(out)
    if not args.report_only and not args.score_saved:
        command = "python scripts/benchmark.py" + ("" if not argv else " " + shlex.join(argv))
        for name in args.sections:
            print(f"== section {name} ({preset})", flush=True)
            started = dt.datetime.now().astimezone()
            t0 = time.perf_counter()
            payload = {"section": name, "preset": preset, "config": config[name], "command": command,
                       "machine": machine(), "started": started.isoformat(timespec="seconds"), "seed": SEED}
            payload.update(RUNNERS[name](config[name], out, args.jobs))
            payload["section_wall_s"] = time.perf_counter() - t0
            keep_other_sizes(payload, load_results(out).get(name))
            save_json(out / "results" / f"{name}.json", payload)
            print(f"== section {name} done in {payload['section_wall_s'] / 60:.1f} min", flush=True)
    from bench_report import write_report

    try:
        source = str((out / "results").relative_to(HERE.parent)) + "/"
    except ValueError:
        source = str(out / "results") + "/"
    path = write_report(load_results(out), report, source)
    print(f"Report: {path}")


if __name__ == "__main__":
    main()
