"""Accuracy and calibration of the individual maps against planted truth, methods side by side.

Usage::

    python scripts/bench_accuracy.py --out bench_out/accuracy [--n-subjects 20] [--methods pavi_e vbem kmeans]

Simulates a binarised fingerprint store (fsaverage5, K=17, 2 sessions) with
``simulate_fingerprint_store``, fits each method, and scores every subject's soft map with
``pavi_parcel.validation.truth_metrics`` (ARI, Dice, top-label ECE, accuracy, confidence;
``group_ari`` = the group atlas used as each subject's map). Prints a markdown table and
writes it to ``docs/bench_accuracy.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pavi_parcel.fit import fit_model
from pavi_parcel.model.baselines import fit_group_kmeans
from pavi_parcel.simulate import load_truth, simulate_fingerprint_store
from pavi_parcel.store import FingerprintStore, read_posterior
from pavi_parcel.validation import truth_metrics

N_NETWORKS = 17


def fit_method(method: str, store_path: Path, out: Path, max_minutes: float):
    """Fit one method; return its Posterior and the wall time in seconds."""
    start = time.perf_counter()
    if method == "kmeans":
        with FingerprintStore(store_path) as store:
            posterior = fit_group_kmeans(store, N_NETWORKS, seed=0).to_posterior(store)
    else:
        path = fit_model(store_path, out / f"model_{method}", {"n_networks": N_NETWORKS},
                         {"method": method, "max_minutes": max_minutes}, seed=0, device="cpu")
        posterior = read_posterior(path)
    return posterior, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/accuracy"))
    parser.add_argument("--n-subjects", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=["pavi_e", "vbem", "kmeans"])
    parser.add_argument("--max-minutes", type=float, default=15.0, help="training cap of each fit")
    parser.add_argument("--report", type=Path, default=Path("docs/bench_accuracy.md"))
    args = parser.parse_args()

    out = args.out.resolve()
    store_path = out / "fingerprints.h5"
    truth = simulate_fingerprint_store(store_path, n_subjects=args.n_subjects, n_sessions=2,
                                       n_networks=N_NETWORKS, seed=0, truth_dir=out / "truth")
    truth = load_truth(out / "truth")
    lines = [f"## Accuracy and calibration: {args.n_subjects} subjects x 2 sessions, fsaverage5, K={N_NETWORKS}",
             "", f"Command: `python scripts/bench_accuracy.py --n-subjects {args.n_subjects} "
                 f"--methods {' '.join(args.methods)}`", "",
             "| method | mean ARI | min ARI | Dice | ECE | accuracy | mean confidence | group-atlas ARI | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in args.methods:
        posterior, seconds = fit_method(method, store_path, out, args.max_minutes)
        table = truth_metrics(posterior, truth)
        lines.append(f"| {method} | {table.ari.mean():.3f} | {table.ari.min():.3f} | {table.dice.mean():.3f} | "
                     f"{table.ece.mean():.3f} | {table.accuracy.mean():.3f} | {table.confidence.mean():.3f} | "
                     f"{table.group_ari.mean():.3f} | {seconds:.0f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)


if __name__ == "__main__":
    main()
