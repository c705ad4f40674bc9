"""Time and peak memory of one PAVI-E fit on a directly simulated fingerprint store in any space.

Usage::

    OMP_NUM_THREADS=2 python scripts/bench_space_scale.py --space fsLR --n-subjects 100 --out bench_out/scale_fslr

Simulates ``n_subjects`` x 2 sessions, K=17 (``simulate_fingerprint_store``, seed 0), fits PAVI-E
with the package defaults (``fit.max_minutes`` raised to 60) and prints one JSON line: simulation
and fit wall times, the training time and steps the posterior records, the peak resident set of
this process (the fit runs here; the simulation's workers are other processes), ARI and ECE.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import h5py

from pavi_parcel.inference.training import fit_model
from pavi_parcel.settings.schema import ModelSettings, fit_preset
from pavi_parcel.simulate import simulate_fingerprint_store
from pavi_parcel.simulate.truth import load_truth
from pavi_parcel.stores.posterior import read_posterior
from pavi_parcel.validation.scoring import truth_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="fsLR")
    parser.add_argument("--n-subjects", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench_out/scale_space"))
    args = parser.parse_args()
    out = args.out.resolve()
    start = time.perf_counter()
    simulate_fingerprint_store(out / "fp.h5", n_subjects=args.n_subjects, n_sessions=2, n_networks=17, seed=0,
                               space=args.space, truth_dir=out / "truth", n_jobs=args.threads, progress=False)
    simulated = time.perf_counter()
    path = fit_model(out / "fp.h5", out / "model", ModelSettings(n_networks=17),
                     fit_preset("pavi_e", max_minutes=60, num_threads=args.threads), seed=0, device="cpu")
    fitted = time.perf_counter()
    scores = truth_metrics(read_posterior(path), load_truth(out / "truth"))
    with h5py.File(path, "r") as handle:
        attrs = dict(handle.attrs)
    print(json.dumps({"space": args.space, "n_subjects": args.n_subjects, "simulate_s": round(simulated - start),
                      "fit_s": round(fitted - simulated), "training_s": round(float(attrs["seconds"])),
                      "steps": int(attrs["n_steps"]), "converged": bool(attrs["converged"]),
                      "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
                      "ari": round(float(scores.ari.mean()), 3), "ece": round(float(scores.ece.mean()), 3)}))


if __name__ == "__main__":
    main()
