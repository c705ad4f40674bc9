"""Benchmark ingestion + fingerprints on a simulated fsaverage5 cohort, and the store size at 100 subjects.

Usage::

    python scripts/bench_ingest.py --out bench_out [--n-subjects 10] [--n-sessions 2] [--n-frames 200]
                                    [--store-subjects 100]

Prints a markdown report (stage totals, per-run breakdown, store sizes) and writes it to
``docs/bench_ingest.md``. The simulation itself is not timed.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from pavi_parcel.bids.discovery import find_runs
from pavi_parcel.fingerprints.compute import binarize_top_fraction, run_correlations
from pavi_parcel.ingest.cleaning import ingest_runs
from pavi_parcel.settings.compose import compose
from pavi_parcel.simulate import simulate_dataset, simulate_fingerprint_store
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.timeseries import read_run_timeseries


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def per_run_breakdown(runs, work_dir: Path, cfg) -> dict[str, float]:
    """Seconds spent by one run in each step, measured on its own (one process)."""
    single = work_dir / "single"
    shutil.rmtree(single, ignore_errors=True)
    t0 = time.perf_counter()
    [path] = ingest_runs(runs[:1], single, cfg.ingest, n_jobs=1)
    t_ingest = time.perf_counter() - t0
    t0 = time.perf_counter()
    ts = read_run_timeseries(path)
    t_read = time.perf_counter() - t0
    columns = np.arange(ts.vertex_index.size)
    seeds = columns[np.isin(ts.vertex_index, np.r_[np.arange(642), 10242 + np.arange(642)])]
    t0 = time.perf_counter()
    corr = run_correlations(ts.data, columns, seeds)
    t_corr = time.perf_counter() - t0
    t0 = time.perf_counter()
    binarize_top_fraction(corr, 0.1)
    t_bin = time.perf_counter() - t0
    return {"ingest (load GIFTI, confounds, clean, write)": t_ingest, "read cleaned series": t_read,
            "correlations with seeds": t_corr, "top-10 % binarisation + packing": t_bin}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--n-subjects", type=int, default=10)
    parser.add_argument("--n-sessions", type=int, default=2)
    parser.add_argument("--n-frames", type=int, default=200)
    parser.add_argument("--store-subjects", type=int, default=100, help="0 to skip the store-size measurement")
    parser.add_argument("--report", type=Path, default=Path("docs/bench_ingest.md"))
    args = parser.parse_args()

    out = args.out.resolve()
    sim = simulate_dataset(out / "sim", n_subjects=args.n_subjects, n_sessions=args.n_sessions,
                           n_frames=args.n_frames, seed=0)
    work = out / "pavi" / "work"
    shutil.rmtree(out / "pavi", ignore_errors=True)
    cfg = compose([f"bids_dir={sim.bids_dir}", f"out_dir={out / 'pavi'}"])

    t0 = time.perf_counter()
    runs = find_runs(sim.bids_dir, space="fsaverage5")
    t_find = time.perf_counter() - t0
    t0 = time.perf_counter()
    paths = ingest_runs(runs, work, cfg.ingest, n_jobs=int(cfg.n_jobs))
    t_ingest = time.perf_counter() - t0
    from pavi_parcel.fingerprints.compute import compute_fingerprints

    t0 = time.perf_counter()
    store_path = compute_fingerprints(paths, work / "fingerprints.h5", cfg.fingerprints)
    t_fp = time.perf_counter() - t0
    with FingerprintStore(store_path) as store:
        n_vert, n_seeds = store.n_vertices, store.n_seeds
        x = store.read(0, np.arange(5))
        assert np.allclose(np.linalg.norm(x, axis=-1), 1, atol=1e-4)
    breakdown = per_run_breakdown(runs, out / "pavi", cfg)

    lines = [
        f"## Ingestion + fingerprints: {args.n_subjects} subjects x {args.n_sessions} sessions x "
        f"{args.n_frames} frames, fsaverage5",
        "",
        f"Command: `python scripts/bench_ingest.py --n-subjects {args.n_subjects} --n-sessions "
        f"{args.n_sessions} --n-frames {args.n_frames} --store-subjects {args.store_subjects}`",
        "",
        "| stage | seconds |", "|---|---|",
        f"| find runs ({len(runs)} runs) | {t_find:.2f} |",
        f"| ingest (n_jobs={cfg.n_jobs}) | {t_ingest:.1f} |",
        f"| fingerprints ({n_vert} vertices x {n_seeds} seeds) | {t_fp:.1f} |",
        f"| **total** | **{t_find + t_ingest + t_fp:.1f}** ({(t_find + t_ingest + t_fp) / 60:.2f} min) |",
        "",
        "Per run, measured alone in one process:", "",
        "| step | seconds |", "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in breakdown.items()],
        "",
        f"Fingerprint store for this cohort: {store_path.stat().st_size / 2**20:.1f} MiB.",
    ]
    if args.store_subjects:
        big = out / "store100" / "fingerprints.h5"
        t0 = time.perf_counter()
        simulate_fingerprint_store(big, n_subjects=args.store_subjects, n_sessions=2, n_networks=17, seed=0)
        t_big = time.perf_counter() - t0
        with FingerprintStore(big) as store:
            shape = (store.n_subjects, store.n_sessions, store.n_vertices, store.n_seeds)
        size = big.stat().st_size
        dense = np.prod(shape) * 4
        lines += ["", f"Store for {shape[0]} subjects x {shape[1]} sessions x {shape[2]} vertices x "
                      f"{shape[3]} seeds: **{size / 2**30:.2f} GiB** on disk (float32 would take "
                      f"{dense / 2**30:.1f} GiB); written by `simulate_fingerprint_store` in {t_big:.0f} s."]
    lines += ["", f"Peak resident memory of the benchmark process: {_peak_rss_gb():.2f} GiB."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)


if __name__ == "__main__":
    main()
