"""Accuracy and calibration of the individual maps against planted truth, methods side by side.

Usage::

    python scripts/bench_accuracy.py --out bench_out/accuracy [--n-subjects 20] [--methods pavi_e vbem kmeans]
    python scripts/bench_accuracy.py --space fsLR --n-subjects 10 --out bench_out/accuracy_fslr

Simulates a binarised fingerprint store (fsaverage5 by default, K=17, 2 sessions) with
``simulate_fingerprint_store``, fits each method, and scores every subject's soft map with
``pavi_parcel.validation.scoring.truth_metrics`` (ARI, Dice, top-label ECE, accuracy, confidence;
``group_ari`` = the group atlas used as each subject's map). Prints a markdown table and
writes it to ``bench_out/accuracy/bench_accuracy.md`` (the full suite, ``scripts/benchmark.py``,
writes ``docs/benchmarks.md``). ``python scripts/benchmark.py`` runs this measurement
across SNR levels and run lengths (``docs/benchmarks.md``) with the functions defined here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pavi_parcel.inference.training import fit_model
from pavi_parcel.model.baselines import fit_group_kmeans
from pavi_parcel.settings.schema import ModelSettings, fit_preset
from pavi_parcel.simulate import simulate_fingerprint_store
from pavi_parcel.simulate.truth import load_truth
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import read_posterior
from pavi_parcel.validation.scoring import truth_metrics

N_NETWORKS = 17
SUMMARY_COLUMNS = ("ari", "dice", "ece", "accuracy", "confidence", "group_ari")


def fit_to_posterior(method: str, store_path: Path, model_dir: Path, n_networks: int = N_NETWORKS,
                     fit_overrides: dict | None = None, seed: int = 0) -> Path:
    """Fit one method (``kmeans`` or a ``fit.method``) and write ``model_dir/posterior.h5``; return its path."""
    if method == "kmeans":
        from pavi_parcel.inference.vbem import as_posterior
        from pavi_parcel.stores.posterior import write_posterior

        with FingerprintStore(store_path) as store:
            posterior = as_posterior(fit_group_kmeans(store, n_networks, seed=seed), store)
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        write_posterior(Path(model_dir) / "posterior.h5", posterior)
        return Path(model_dir) / "posterior.h5"
    return fit_model(store_path, model_dir, ModelSettings(n_networks=n_networks),
                     fit_preset(method, **(fit_overrides or {})), seed=seed, device="cpu")


def summarize(posterior, truth) -> dict:
    """Cohort means of :func:`truth_metrics` (plus the minimum ARI) as plain floats."""
    table = truth_metrics(posterior, truth)
    out = {k: float(table[k].mean()) for k in SUMMARY_COLUMNS}
    out["min_ari"] = float(table["ari"].min())
    return out


def fit_method(method: str, store_path: Path, out: Path, max_minutes: float):
    """Fit one method; return its Posterior and the wall time in seconds."""
    start = time.perf_counter()
    path = fit_to_posterior(method, store_path, out / f"model_{method}", N_NETWORKS, {"max_minutes": max_minutes})
    return read_posterior(path), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/accuracy"))
    parser.add_argument("--n-subjects", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=["pavi_e", "vbem", "kmeans"])
    parser.add_argument("--space", default="fsaverage5", help="simulation space: fsaverage5, fsaverage6, fsLR, MNI...")
    parser.add_argument("--max-minutes", type=float, default=15.0, help="training cap of each fit")
    parser.add_argument("--report", type=Path, default=Path("bench_out/accuracy/bench_accuracy.md"))
    args = parser.parse_args()

    out = args.out.resolve()
    store_path = out / "fingerprints.h5"
    truth = simulate_fingerprint_store(store_path, n_subjects=args.n_subjects, n_sessions=2,
                                       n_networks=N_NETWORKS, seed=0, space=args.space, truth_dir=out / "truth")
    truth = load_truth(out / "truth")
    lines = [f"## Accuracy and calibration: {args.n_subjects} subjects x 2 sessions, {args.space}, K={N_NETWORKS}",
             "", f"Command: `python scripts/bench_accuracy.py --space {args.space} --n-subjects {args.n_subjects} "
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
