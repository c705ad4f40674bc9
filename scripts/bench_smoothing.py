"""Spatial smoothness (Potts prior) and calibration across simulated cohorts and designs -> docs/bench_smoothing.md.

Usage::

    python scripts/bench_smoothing.py                       # every cohort and the timing (about 1 h on 2 cores)
    python scripts/bench_smoothing.py --cohorts default "one session" --timing 0 --out bench_out/smoothing
    python scripts/bench_smoothing.py --from bench_out/full/results/smoothing.json   # report of a saved run
    python scripts/bench_smoothing.py --from bench_out/full/results/smoothing.json --refit default svi auto
                                                            # refit one row of it (after a change to one method)

The same measurements are section ``smoothing`` of ``scripts/benchmark.py`` (:func:`measure`,
:func:`render`).

For each cohort (the simulator's default; coarse, salt-and-pepper and patchy deviation fields;
thermal noise independent at every vertex; the weakest and strongest SNR; one and three
sessions per subject; an MNI volume), simulates
fMRIPrep-like BIDS runs (seed 3), builds the fingerprint store with
``pavi-parcel fit --stop-after fingerprints`` (single-session cohorts are split into
pseudo-sessions there, ``fingerprints.split=auto``), then fits PAVI-E and VB-EM with
``model.potts_beta=0`` and ``auto`` (and, on the default cohort, PAVI-F and mean-field SVI),
each fit in its own process, one at a time: wall time and peak resident memory are the fit's
alone (``wait4``'s ``ru_maxrss``). Every subject's soft map is scored against the planted labels
(ARI, ECE, mean confidence). The one-session cohort is also fitted unsplit
(``fingerprints.split=none``), the calibration it replaces. Per cohort, the labels each vertex's
noise-free signal points to are scored too: what no method can beat. Last, PAVI-E fits with and
without smoothing alternate on one cohort for the time ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 3
COHORTS = {  # name: simulate options
    "default": [],
    "coarse": ["--deviation-smoothness", "100"],
    "salt-and-pepper": ["--deviation-smoothness", "0", "--islands", "0"],
    "patchy": ["--islands", "20"],
    "independent noise": ["--noise-smoothness", "0"],
    "low SNR": ["--snr", "0.15"],
    "high SNR": ["--snr", "0.6"],
    "one session": ["--n-sessions", "1", "--n-frames", "360"],
    "three sessions": ["--n-sessions", "3"],
    "volume": ["--space", "MNI152NLin2009cAsym"],
}
EVERY_METHOD = ("default",)  # cohorts where PAVI-F and SVI are fitted too
UNSPLIT = ("one session",)  # cohorts also fitted with fingerprints.split=none
FULL = {"cohorts": list(COHORTS), "n_subjects": 10, "timing_cohort": "default", "timing_repeats": 3}
QUICK = {"cohorts": ["default", "one session"], "n_subjects": 3, "timing_cohort": "default", "timing_repeats": 1}


def folder(out: Path, name: str) -> Path:
    return out / name.replace(" ", "_")


def fingerprints(out: Path, name: str, n_subjects: int, split: str = "auto") -> tuple[Path, Path, float]:
    """Simulate one cohort and build its fingerprint store; (store, truth folder, seconds of the stores)."""
    sim, fit = folder(out, name) / "sim", folder(out, name) / f"fit_{split}"
    store = fit / "work" / "fingerprints.h5"
    start = time.perf_counter()
    cli = [sys.executable, "-m", "pavi_parcel.cli"]
    if not (sim / "truth").exists():
        subprocess.run([*cli, "simulate", str(sim), "--n-subjects", str(n_subjects), "--seed", str(SEED),
                        *COHORTS[name]], check=True, capture_output=True)
    if not store.exists():
        subprocess.run([*cli, "fit", str(sim / "bids"), str(fit), "--stop-after", "fingerprints", "n_jobs=2",
                        f"fingerprints.split={split}"], check=True, capture_output=True)
    return store, sim / "truth", time.perf_counter() - start


def run_fit(store: Path, truth: Path, method: str, beta: str, target: Path) -> dict:
    """One fit in a child process; its scores, wall time and peak memory."""
    spec = target.with_suffix(".json")
    shutil.rmtree(target, ignore_errors=True)  # a fresh fit: no checkpoint of an earlier run to resume from
    target.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, __file__, "_fit", str(store), str(truth), method, beta, str(target),
                              str(spec)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"fit {method} potts_beta={beta} on {store} failed")
    result = json.loads(spec.read_text())
    result.update(seconds=seconds, peak_mib=usage.ru_maxrss / 1024)
    return result


def _child(store: str, truth: str, method: str, beta: str, target: str, spec: str) -> None:
    import torch

    from pavi_parcel.inference.training import fit_model
    from pavi_parcel.settings.schema import ModelSettings, fit_preset
    from pavi_parcel.simulate.truth import load_truth
    from pavi_parcel.stores.posterior import read_posterior
    from pavi_parcel.validation.scoring import truth_metrics

    torch.set_num_threads(2)
    path = fit_model(Path(store), Path(target), ModelSettings(potts_beta=beta if beta == "auto" else float(beta)),
                     fit_preset(method), seed=0, device="cpu")
    post = read_posterior(path)
    table = truth_metrics(post, load_truth(Path(truth)))
    potts = post.attrs.get("potts", {})
    Path(spec).write_text(json.dumps({
        "ari": float(table.ari.mean()), "ece": float(table.ece.mean()), "confidence": float(table.confidence.mean()),
        "accuracy": float(table.accuracy.mean()), "beta": float(potts.get("beta", 0.0)),
        "gamma": float(potts.get("gamma", 1.0)), "sessions": list(post.sessions)}))


def signal_ceiling(truth_dir: Path) -> tuple[float, float]:
    """Mean ARI and accuracy, over subjects, of the labels each vertex's noise-free signal points to."""
    import numpy as np

    from pavi_parcel.metrics.scores import adjusted_rand_index
    from pavi_parcel.simulate.fmri import signal_labels
    from pavi_parcel.simulate.geometry import build_space
    from pavi_parcel.simulate.truth import load_truth

    truth = load_truth(truth_dir)
    sim = build_space(truth.settings["space"], truth.settings.get("resolution_mm", 4))
    scores = []
    for labels in truth.subject_labels.values():
        planted = labels[sim.valid]
        shown = signal_labels(sim, planted)
        scores.append((adjusted_rand_index(shown, planted), float(np.mean(shown == planted))))
    ari, accuracy = np.mean(scores, axis=0)
    return float(ari), float(accuracy)


def time_side_by_side(out: Path, name: str, n_subjects: int, repeats: int) -> dict:
    """PAVI-E fits with and without smoothing, alternately, on one cohort: each fit's seconds."""
    store, truth, _ = fingerprints(out, name, n_subjects)
    seconds: dict[str, list[float]] = {"0": [], "auto": []}
    for i in range(repeats):
        for beta in ("0", "auto"):
            r = run_fit(store, truth, "pavi_e", beta, folder(out, name) / "timing" / f"pavi_e_{beta}_{i}")
            seconds[beta].append(r["seconds"])
            print(f"{name} pavi_e potts_beta={beta} run {i + 1}: {r['seconds']:.1f} s", flush=True)
    return {"cohort": name, "repeats": repeats, "seconds": seconds}


def measure(cfg: dict, out: Path) -> dict:
    """Every cohort's fits, signal ceilings and the side-by-side timing; a JSON-able dict.

    Parameters
    ----------
    cfg : dict
        ``cohorts`` (names of :data:`COHORTS`), ``n_subjects``, ``timing_cohort``,
        ``timing_repeats`` (0: no timing), as :data:`FULL`.
    out : Path
        Work folder: simulations, stores and fits, reused when there.
    """
    out = Path(out).resolve()
    rows, ceilings = [], []
    for name in cfg["cohorts"]:
        for split in ("auto", "none") if name in UNSPLIT else ("auto",):
            store, truth, _ = fingerprints(out, name, cfg["n_subjects"], split)
            if split == "auto":
                ari, accuracy = signal_ceiling(truth)
                ceilings.append({"cohort": name, "ari": ari, "accuracy": accuracy})
            methods = ("pavi_e", "pavi_f", "svi", "vbem") if name in EVERY_METHOD else ("pavi_e", "vbem")
            for method in methods if split == "auto" else ("pavi_e",):
                for beta in ("0", "auto"):
                    r = run_fit(store, truth, method, beta, folder(out, name) / f"{method}_{beta}_{split}")
                    rows.append({"cohort": name, "split": split, "method": method, "potts_beta": beta, **r})
                    print(_fit_row(rows[-1]), flush=True)
    timing = None
    if cfg.get("timing_repeats"):
        timing = time_side_by_side(out, cfg["timing_cohort"], cfg["n_subjects"], cfg["timing_repeats"])
    return {"rows": rows, "ceilings": ceilings, "timing": timing, "n_subjects": cfg["n_subjects"],
            "simulation_seed": SEED, "cpus": os.cpu_count()}


def _fit_row(r: dict) -> str:
    label = r["cohort"] if r["split"] == "auto" else f"{r['cohort']}, unsplit"
    return (f"| {label} | {r['method']} | {r['potts_beta']} | {r['beta']:g} | {r['ari']:.3f} | {r['ece']:.3f} | "
            f"{r['confidence']:.3f} | {r['accuracy']:.3f} | {r['seconds']:.1f} | {r['peak_mib']:.0f} |")


def _pick(rows: list[dict], cohort: str, method: str, beta: str, split: str = "auto") -> dict | None:
    return next((r for r in rows if (r["cohort"], r["method"], r["potts_beta"], r["split"])
                 == (cohort, method, beta, split)), None)


def targets(payload: dict) -> list[str]:
    """The smoothing goals against what was measured: markdown lines (a table)."""
    rows, lines = payload["rows"], []
    for c in payload["ceilings"]:
        off, on = _pick(rows, c["cohort"], "pavi_e", "0"), _pick(rows, c["cohort"], "pavi_e", "auto")
        vbem = _pick(rows, c["cohort"], "vbem", "auto")
        if off and on:
            lines.append(f"| {c['cohort']} | {off['ari']:.3f} | {on['ari']:.3f} ({on['ari'] - off['ari']:+.3f}) | "
                         + (f"{vbem['ari']:.3f} | " if vbem else "- | ")
                         + f"{c['ari']:.3f} | {on['ece']:.3f} | {on['beta']:g} |")
    if not lines:
        return []
    return ["| cohort | PAVI-E ARI, potts_beta=0 | PAVI-E ARI, auto (change) | VB-EM ARI, auto | signal ARI "
            "(ceiling) | PAVI-E ECE, auto | chosen beta |", "|---|---|---|---|---|---|---|", *lines, ""]


def refit(payload: dict, out: Path, cohort: str, method: str, beta: str) -> None:
    """Measure one fit of a saved result again, in place, and record when and at which commit."""
    row = _pick(payload["rows"], cohort, method, beta)
    if row is None:
        raise SystemExit(f"no row {cohort} {method} potts_beta={beta} in the saved result")
    store, truth, _ = fingerprints(out, cohort, payload["n_subjects"])
    row.update(run_fit(store, truth, method, beta, folder(out, cohort) / f"{method}_{beta}_auto"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    payload.setdefault("refits", []).append({"row": f"{cohort} {method} {beta}", "git": commit,
                                             "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    print(_fit_row(row), flush=True)


def render(payload: dict) -> list[str]:
    """Markdown lines of a :func:`measure` result: the goals, every fit, the ceilings, the timing."""
    lines = [f"{payload['n_subjects']} simulated subjects per cohort before QC, 17 networks, simulation seed "
             f"{payload['simulation_seed']}, fit seed 0, one fit at a time ({payload['cpus']} CPUs). ARI, ECE, "
             "confidence and accuracy are means over subjects against the planted maps; `chosen beta` is the Potts "
             "strength the fit used (`auto`: chosen across sessions or pseudo-sessions, without the truth); "
             "`fit s` and `peak MiB` are the fit's process alone (fingerprints built beforehand). `signal ARI`: "
             "the labels each vertex's noise-free signal points to, the ceiling of every method (below).", "",
             *targets(payload),
             "| cohort | method | potts_beta | chosen beta | ARI | ECE | confidence | accuracy | fit s | peak MiB |",
             "|---|---|---|---|---|---|---|---|---|---|", *map(_fit_row, payload["rows"]), "",
             "**What the signal can show.** The simulator blurs each subject's planted labels into its loadings "
             "(`simulate.fmri.NEAR_STEPS` neighbour steps), so near a boundary a vertex can carry more of a "
             "neighbouring network than its own. Scored like the fits, the labels that each vertex's noise-free "
             "signal points to (`simulate.fmri.signal_labels`):", "",
             "| cohort | signal ARI | signal accuracy |", "|---|---|---|",
             *(f"| {c['cohort']} | {c['ari']:.3f} | {c['accuracy']:.3f} |" for c in payload["ceilings"]), ""]
    for r in payload.get("refits", []):
        lines += [f"Row `{r['row']}` measured again on {r['date']} at git {r['git']} "
                  f"(`python scripts/bench_smoothing.py --from ... --refit {r['row']}`).", ""]
    timing = payload.get("timing")
    if timing:
        import statistics

        off, on = (statistics.median(timing["seconds"][b]) for b in ("0", "auto"))
        lines += [f"**Time side by side ({timing['cohort']} cohort).** PAVI-E fits with `model.potts_beta=0` and "
                  f"`auto`, alternately, {timing['repeats']} times each, one at a time, in the same run:", "",
                  "| potts_beta | fit seconds (each run) | median |", "|---|---|---|",
                  *(f"| {b} | {', '.join(f'{x:.1f}' for x in timing['seconds'][b])} | {m:.1f} |"
                    for b, m in (("0", off), ("auto", on))),
                  "", f"Ratio of the medians (auto / 0): **{on / off:.2f}x**.", ""]
    return lines


def main() -> None:
    if sys.argv[1:2] == ["_fit"]:
        _child(*sys.argv[2:8])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/smoothing"))
    p.add_argument("--report", type=Path, default=HERE.parent / "docs" / "bench_smoothing.md")
    p.add_argument("--cohorts", nargs="+", default=FULL["cohorts"], choices=list(COHORTS))
    p.add_argument("--n-subjects", type=int, default=FULL["n_subjects"])
    p.add_argument("--timing", type=int, default=FULL["timing_repeats"], metavar="N",
                   help="time PAVI-E with potts_beta=0 and auto on the first cohort, alternately, N times each "
                        "(0: skip)")
    p.add_argument("--from", dest="saved", type=Path, metavar="JSON",
                   help="only write the report of a saved result (OUT/results.json, or benchmark.py's "
                        "results/smoothing.json)")
    p.add_argument("--refit", nargs=3, metavar=("COHORT", "METHOD", "BETA"),
                   help="with --from: fit one row again (its work folder next to the JSON: "
                        "results/../smoothing or OUT), update the JSON and the report")
    args = p.parse_args()
    if args.saved:
        payload = json.loads(args.saved.read_text())
        command = payload.get("command", "python scripts/bench_smoothing.py")
        if args.refit:
            work = args.saved.parent if args.saved.name == "results.json" else args.saved.parent.parent / "smoothing"
            refit(payload, work.resolve(), *args.refit)
            args.saved.write_text(json.dumps(payload, indent=1))
    else:
        cfg = {"cohorts": args.cohorts, "n_subjects": args.n_subjects, "timing_cohort": args.cohorts[0],
               "timing_repeats": args.timing}
        payload = measure(cfg, args.out)
        command = "python scripts/bench_smoothing.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
        payload["command"] = command
        (args.out / "results.json").write_text(json.dumps(payload, indent=1))
    text = "\n".join(["# Spatial smoothness and calibration across cohorts and designs", "",
                      f"Generated by `{command}`.", "", *render(payload)])
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(f"Report: {args.report}")


if __name__ == "__main__":
    main()
