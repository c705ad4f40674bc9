"""Spatial smoothness (Potts prior) and calibration across simulated cohorts and designs -> docs/bench_smoothing.md.

Usage::

    python scripts/bench_smoothing.py                       # every cohort (about 50 min on 2 cores)
    python scripts/bench_smoothing.py --cohorts default "one session" --out bench_out/smoothing

For each cohort (the simulator's default; coarse, salt-and-pepper and patchy deviation fields;
the weakest and strongest SNR; one and three sessions per subject; an MNI volume), simulates
fMRIPrep-like BIDS runs (seed 3), builds the fingerprint store with
``pavi-parcel fit --stop-after fingerprints`` (single-session cohorts are split into
pseudo-sessions there, ``fingerprints.split=auto``), then fits PAVI-E and VB-EM with
``model.potts_beta=0`` and ``auto`` (and, on the default cohort, PAVI-F and mean-field SVI),
each fit in its own process, one at a time: wall time and peak resident memory are the fit's
alone (``wait4``'s ``ru_maxrss``). Every subject's soft map is scored against the planted labels
(ARI, ECE, mean confidence). The one-session cohort is also fitted unsplit
(``fingerprints.split=none``), the calibration it replaces.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 3
N_SUBJECTS = 10
COHORTS = {  # name: simulate options
    "default": [],
    "coarse": ["--deviation-smoothness", "100"],
    "salt-and-pepper": ["--deviation-smoothness", "0", "--islands", "0"],
    "patchy": ["--islands", "20"],
    "low SNR": ["--snr", "0.15"],
    "high SNR": ["--snr", "0.6"],
    "one session": ["--n-sessions", "1", "--n-frames", "360"],
    "three sessions": ["--n-sessions", "3"],
    "volume": ["--space", "MNI152NLin2009cAsym"],
}
EVERY_METHOD = ("default",)  # cohorts where PAVI-F and SVI are fitted too
UNSPLIT = ("one session",)  # cohorts also fitted with fingerprints.split=none


def folder(out: Path, name: str) -> Path:
    return out / name.replace(" ", "_")


def fingerprints(out: Path, name: str, split: str = "auto") -> tuple[Path, Path, float]:
    """Simulate one cohort and build its fingerprint store; (store, truth folder, seconds of the stores)."""
    sim, fit = folder(out, name) / "sim", folder(out, name) / f"fit_{split}"
    store = fit / "work" / "fingerprints.h5"
    start = time.perf_counter()
    cli = [sys.executable, "-m", "pavi_parcel.cli"]
    if not (sim / "truth").exists():
        subprocess.run([*cli, "simulate", str(sim), "--n-subjects", str(N_SUBJECTS), "--seed", str(SEED),
                        *COHORTS[name]], check=True, capture_output=True)
    if not store.exists():
        subprocess.run([*cli, "fit", str(sim / "bids"), str(fit), "--stop-after", "fingerprints", "n_jobs=2",
                        f"fingerprints.split={split}"], check=True, capture_output=True)
    return store, sim / "truth", time.perf_counter() - start


def run_fit(store: Path, truth: Path, method: str, beta: str, target: Path) -> dict:
    """One fit in a child process; its scores, wall time and peak memory."""
    spec = target.with_suffix(".json")
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


def time_side_by_side(out: Path, name: str, repeats: int, report: Path) -> None:
    """PAVI-E fits with and without smoothing, alternately, on one cohort: median times and their ratio."""
    import statistics

    store, truth, _ = fingerprints(out, name)
    seconds: dict[str, list[float]] = {"0": [], "auto": []}
    for i in range(repeats):
        for beta in ("0", "auto"):
            r = run_fit(store, truth, "pavi_e", beta, folder(out, name) / "timing" / f"pavi_e_{beta}_{i}")
            seconds[beta].append(r["seconds"])
            print(f"{name} pavi_e potts_beta={beta} run {i + 1}: {r['seconds']:.1f} s", flush=True)
    off, on = statistics.median(seconds["0"]), statistics.median(seconds["auto"])
    lines = ["", f"## Time side by side ({name} cohort)", "",
             f"`python scripts/bench_smoothing.py --cohorts \"{name}\" --timing {repeats}`: PAVI-E fits with "
             f"`model.potts_beta=0` and `auto`, alternately, {repeats} times each, one at a time.", "",
             "| potts_beta | fit seconds (each run) | median |", "|---|---|---|",
             *(f"| {b} | {', '.join(f'{x:.1f}' for x in seconds[b])} | {m:.1f} |"
               for b, m in (("0", off), ("auto", on))),
             "", f"Ratio of the medians (auto / 0): **{on / off:.2f}x**.", ""]
    with report.open("a") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    if sys.argv[1:2] == ["_fit"]:
        _child(*sys.argv[2:8])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/smoothing"))
    p.add_argument("--report", type=Path, default=HERE.parent / "docs" / "bench_smoothing.md")
    p.add_argument("--cohorts", nargs="+", default=list(COHORTS), choices=list(COHORTS))
    p.add_argument("--timing", type=int, metavar="N", help="only time PAVI-E with potts_beta=0 and auto on the "
                   "first cohort, alternately, N times each; append the medians to the report")
    args = p.parse_args()
    out = args.out.resolve()
    if args.timing:
        time_side_by_side(out, args.cohorts[0], args.timing, args.report)
        return
    head = ("| cohort | method | potts_beta | chosen beta | ARI | ECE | confidence | accuracy | fit s | peak MiB |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    rows, ceilings = [], []
    for name in args.cohorts:
        splits = ("auto", "none") if name in UNSPLIT else ("auto",)
        for split in splits:
            store, truth, _ = fingerprints(out, name, split)
            if split == "auto":
                ceilings.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in signal_ceiling(truth)) + " |")
            methods = ("pavi_e", "pavi_f", "svi", "vbem") if name in EVERY_METHOD else ("pavi_e", "vbem")
            for method in methods if split == "auto" else ("pavi_e",):
                for beta in ("0", "auto"):
                    r = run_fit(store, truth, method, beta, folder(out, name) / f"{method}_{beta}_{split}")
                    label = name if split == "auto" else f"{name}, unsplit"
                    rows.append(f"| {label} | {method} | {beta} | {r['beta']:g} | {r['ari']:.3f} | {r['ece']:.3f} | "
                                f"{r['confidence']:.3f} | {r['accuracy']:.3f} | {r['seconds']:.1f} | "
                                f"{r['peak_mib']:.0f} |")
                    print(rows[-1], flush=True)
    command = "python scripts/bench_smoothing.py" + ("" if args.cohorts == list(COHORTS) else
                                                     " --cohorts " + " ".join(f'"{c}"' for c in args.cohorts))
    text = "\n".join([
        "# Spatial smoothness and calibration across cohorts and designs", "",
        f"Generated by `{command}` ({N_SUBJECTS} simulated subjects per cohort before QC, 17 networks, "
        f"simulation seed {SEED}, fit seed 0, one fit at a time on this machine: {os.cpu_count()} CPUs). "
        "ARI, ECE, confidence and accuracy are means over subjects against the planted maps; "
        "`chosen beta` is the Potts strength the fit used (`auto`: chosen across sessions or "
        "pseudo-sessions, without the truth); `fit s` and `peak MiB` are the fit's process alone "
        "(fingerprints built beforehand).", "", head, *rows, "",
        "## What the signal can show", "",
        "The simulator blurs each subject's planted labels into its loadings "
        "(`simulate.fmri.NEAR_STEPS` neighbour steps), so near a boundary a vertex can carry more of a "
        "neighbouring network than its own. Scored like the fits, the labels that each vertex's "
        "noise-free signal points to (`simulate.fmri.signal_labels`) are what no method can beat:", "",
        "| cohort | signal ARI | signal accuracy |", "|---|---|---|", *ceilings, ""])
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(f"Report: {args.report}")


if __name__ == "__main__":
    main()
