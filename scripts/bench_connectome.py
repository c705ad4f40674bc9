"""Network graph recovery from individual maps with a population prior -> docs/bench_connectome.md.

Usage::

    python scripts/bench_connectome.py                          # K = 7 and 17, 20 subjects (about 15 min)
    python scripts/bench_connectome.py --k 7 --n-subjects 100 --out bench_out/connectome100

For each K, simulates a cohort whose network time courses follow a planted sparse graph
(``pavi-parcel simulate --graph-density 0.25``; 2 sessions x 300 frames, seed 5), fits it with
``pavi-parcel fit ... connectome.enabled=false``, then runs ``pavi-parcel connectome`` in its own
process (wall time and peak resident memory from ``wait4``) once killed with SIGKILL part-way
and once to the end (the resume). Then every subject's partial correlations are scored against
its planted ones, after matching the fitted networks to the planted ones:

* individual soft maps + group-sparse covariance (the product's default);
* individual hard maps + group-sparse covariance (``connectome.weighting=hard``);
* individual soft maps + a graphical lasso per subject (no population prior);
* individual soft maps + the inverse of the correlation matrix (no sparsity, no prior);
* the group atlas as everybody's map + group-sparse covariance (no individual maps).

Scores: the correlation of the estimated and planted partial correlations over the network
pairs (``partial r``), the F1 of the estimated edges (non-zero entries) against the planted ones,
and the edge AUC (how well ``|partial correlation|`` ranks planted edges above the other pairs).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SEED = 5
DENSITY = 0.25


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pavi_parcel.cli", *args]


def timed(command: list[str], kill_after: float | None = None) -> tuple[float, float, int]:
    """Run ``command``; (seconds, peak MiB, return code); SIGKILL it after ``kill_after`` s when given.

    The peak is GNU time's (``/usr/bin/time -f %M``), the command's own: ``wait4`` on a child forked
    from this process would count this process's pages too.
    """
    start = time.perf_counter()
    child = subprocess.Popen(["/usr/bin/time", "-f", "%M", *command], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        time.sleep(kill_after)
        for line in subprocess.run(["pgrep", "-P", str(child.pid)], capture_output=True, text=True).stdout.split():
            os.kill(int(line), signal.SIGKILL)  # the command itself, not GNU time
    _, err = child.communicate()
    last = err.strip().splitlines()[-1] if err.strip() else ""
    peak = float(last) / 1024 if last.isdigit() else float("nan")
    return time.perf_counter() - start, peak, child.returncode


def variants(out_dir: Path) -> dict[str, list[np.ndarray]]:
    """Every subject's partial correlations (label order) under each estimator of the module docstring."""
    from pavi_parcel.atlas.naming import read_label_table
    from pavi_parcel.connectome.estimate import (
        correlation_matrix,
        group_sparse_connectomes,
        individual_sparse_partial,
        pooled,
    )
    from pavi_parcel.connectome.stage import cohort_runs
    from pavi_parcel.connectome.timeseries import network_weights, run_network_timeseries
    from pavi_parcel.io.layout import label_table_path, posterior_path
    from pavi_parcel.metrics.graphs import partial_from_precision
    from pavi_parcel.stores.posterior import read_posterior
    from pavi_parcel.stores.timeseries import read_run_timeseries

    post = read_posterior(posterior_path(out_dir))
    table = read_label_table(label_table_path(out_dir, post.n_networks))
    runs = cohort_runs(out_dir, post.subjects)
    group = table.reorder(post.group_probs)
    series: dict[str, list[np.ndarray]] = {"soft": [], "hard": [], "group": []}
    for s, label in enumerate(post.subjects):
        probs = table.reorder(post.subject_probs[s])
        data = [read_run_timeseries(r.path) for r in runs[label]]
        for kind, weights in (("soft", network_weights(probs, "soft")), ("hard", network_weights(probs, "hard")),
                              ("group", network_weights(group, "soft"))):
            series[kind].append(pooled([run_network_timeseries(d, post.vertex_index, weights) for d in data]))
    out = {"individual soft + population prior": list(group_sparse_connectomes(series["soft"]).partial),
           "individual hard + population prior": list(group_sparse_connectomes(series["hard"]).partial),
           "individual soft, graphical lasso per subject": [individual_sparse_partial(x) for x in series["soft"]],
           "individual soft, inverse correlation": [partial_from_precision(np.linalg.inv(correlation_matrix(x)))
                                                     for x in series["soft"]],
           "group atlas + population prior": list(group_sparse_connectomes(series["group"]).partial)}
    return out


def score(out_dir: Path, truth_dir: Path, estimates: dict[str, list[np.ndarray]]) -> dict[str, tuple[float, ...]]:
    """Mean partial r, edge F1 and edge AUC of each estimator over the subjects."""
    from pavi_parcel.atlas.naming import read_label_table
    from pavi_parcel.io.layout import label_table_path, posterior_path
    from pavi_parcel.metrics.graphs import edge_auc, edge_correlation, edge_f1
    from pavi_parcel.simulate.graph import load_planted_graph
    from pavi_parcel.simulate.truth import load_truth
    from pavi_parcel.stores.posterior import read_posterior
    from pavi_parcel.validation.graphs import in_planted_order
    from pavi_parcel.validation.matching import truth_mapping

    post = read_posterior(posterior_path(out_dir))
    graph = load_planted_graph(truth_dir)
    order = read_label_table(label_table_path(out_dir, post.n_networks)).order
    mapping = truth_mapping(post, load_truth(truth_dir))[2]
    k = graph.group_precision.shape[0]
    result = {}
    for name, matrices in estimates.items():
        r, f1, auc = [], [], []
        for label, matrix in zip(post.subjects, matrices):
            moved = in_planted_order(np.asarray(matrix), order, mapping, k)
            if moved is None:
                continue
            r.append(edge_correlation(moved, graph.subject_partial(label)))
            f1.append(edge_f1(np.where(np.abs(moved) > 1e-8, moved, 0.0), graph.edges))
            auc.append(edge_auc(moved, graph.edges))
        result[name] = (float(np.nanmean(r)), float(np.mean(f1)), float(np.nanmean(auc)))
    return result


def bench(out: Path, k: int, n_subjects: int) -> list[str]:
    sim, fit = out / f"k{k}" / "sim", out / f"k{k}" / "fit"
    if not (sim / "truth").exists():
        subprocess.run(cli("simulate", str(sim), "--n-subjects", str(n_subjects), "--n-networks", str(k),
                           "--n-frames", "300", "--graph-density", str(DENSITY), "--seed", str(SEED)),
                       check=True, capture_output=True)
    if not (fit / f"seg-pavi{k}_dseg.tsv").exists():
        subprocess.run(cli("fit", str(sim / "bids"), str(fit), "--n-networks", str(k),
                           "connectome.enabled=false", "export.report=false"), check=True, capture_output=True)
    for folder in list(fit.glob("sub-*/func")) + list(fit.glob("sub-*/ses-*/func")) + [fit / "model" / "connectome"]:
        for path in folder.glob("*") if folder.is_dir() else []:
            path.unlink()
    killed = timed(cli("connectome", str(fit)), kill_after=4.0)
    done_before = len(list(fit.glob("sub-*/ses-*/func/*_timeseries.tsv")))
    seconds, peak, code = timed(cli("connectome", str(fit)))
    assert code == 0, f"pavi-parcel connectome failed on K={k}"
    estimates = variants(fit)
    scores = score(fit, sim / "truth", estimates)
    from pavi_parcel.validation.scoring import validate_run

    table = validate_run(fit, truth_dir=sim / "truth")
    mean = table[table["subject"] == "mean"].iloc[0]
    lines = [f"### K = {k}, {n_subjects} subjects x 2 sessions x 300 frames, planted graph density {DENSITY}", "",
             f"Maps: ARI {mean['ari']:.3f}, ECE {mean['ece']:.3f}. `pavi-parcel connectome`: {seconds:.1f} s, "
             f"peak RSS {peak:.0f} MiB (resumed after a SIGKILL at 4 s, when {done_before} run time series "
             f"were written; the killed run's exit status {killed[2]}). `validate`: graph edge F1 "
             f"{mean['graph_edge_f1']:.3f}, edge AUC {mean['graph_edge_auc']:.3f}, "
             f"partial r {mean['graph_partial_r']:.3f}.", "",
             "| estimator | partial r (planted) | edge F1 | edge AUC |", "|---|---|---|---|"]
    lines += [f"| {name} | {r:.3f} | {f1:.3f} | {auc:.3f} |" for name, (r, f1, auc) in scores.items()]
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/connectome"))
    parser.add_argument("--k", type=int, nargs="+", default=[7, 17])
    parser.add_argument("--n-subjects", type=int, default=20)
    parser.add_argument("--report", type=Path, default=HERE.parent / "docs" / "bench_connectome.md")
    args = parser.parse_args()
    lines = ["# Network graph recovery (`scripts/bench_connectome.py`)", "",
             f"Command: `python scripts/bench_connectome.py --k {' '.join(map(str, args.k))} "
             f"--n-subjects {args.n_subjects}`; 2 cores, one process at a time.", ""]
    for k in args.k:
        lines += bench(args.out, k, args.n_subjects)
        args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
