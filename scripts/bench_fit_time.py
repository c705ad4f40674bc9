"""A PAVI-E fit with this checkout's code against the same fit at another git revision, side by side.

Usage::

    python scripts/bench_fit_time.py --against 416f517               # 100 subjects, K = 17, 2 alternating fits each
    python scripts/bench_fit_time.py --against HEAD~3 --n-subjects 20 --repeats 3

Simulates a fingerprint store (``pavi-parcel simulate --fingerprints-only``, seed 0) once, checks
the revision out in a git worktree, then alternates fits (``fit_model`` with the default model and
``fit=pavi_e`` settings, K = 17) of the two code trees, each in its own process, one at a time, and
prints each fit's wall time and the ARI and ECE of its maps against the planted labels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys, time
from pathlib import Path
from pavi_parcel.inference.training import fit_model
from pavi_parcel.settings.schema import ModelSettings, fit_preset
from pavi_parcel.simulate.truth import load_truth
from pavi_parcel.stores.posterior import read_posterior
from pavi_parcel.validation.scoring import truth_metrics
store, out, truth = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
start = time.perf_counter()
fit_model(store, out, ModelSettings(n_networks=17), fit_preset("pavi_e"), seed=0, device="cpu")
seconds = time.perf_counter() - start
scores = truth_metrics(read_posterior(out / "posterior.h5"), load_truth(truth))
import pavi_parcel
print(json.dumps({"seconds": seconds, "ari": float(scores.ari.mean()), "ece": float(scores.ece.mean()),
                  "code": str(Path(pavi_parcel.__file__).parents[1])}))
"""


def fit_once(code: Path, store: Path, out: Path, truth: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)  # a checkpoint there would resume the fit instead of running it
    env = {**os.environ, "PYTHONPATH": str(code)}  # ahead of the editable install
    # run from the code tree itself: `python -c` puts the working folder first on sys.path
    done = subprocess.run([sys.executable, "-c", CHILD, str(store.resolve()), str(out.resolve()),
                           str(truth.resolve())], env=env, cwd=code, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="git revision to compare with")
    parser.add_argument("--n-subjects", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench_out/fit_time"))
    args = parser.parse_args()
    sim = args.out / f"s{args.n_subjects}"
    store, truth = sim / "work" / "fingerprints.h5", sim / "truth"
    if not store.is_file():
        subprocess.run([sys.executable, "-m", "pavi_parcel.cli", "simulate", str(sim), "--fingerprints-only",
                        "--n-subjects", str(args.n_subjects), "--n-jobs", "2"], check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(other), args.against],
                       check=True)
        try:
            runs: dict[str, list[dict]] = {args.against: [], "this checkout": []}
            for i in range(args.repeats):
                for name, code in ((args.against, other), ("this checkout", ROOT)):
                    result = fit_once(code, store, args.out / f"fit_{i}_{name.replace(' ', '_')}", truth)
                    runs[name].append(result)
                    assert Path(result["code"]) == code.resolve(), f"{name} ran the code of {result['code']}"
                    print(f"{name}: {result['seconds']:.1f} s, ARI {result['ari']:.4f}, ECE {result['ece']:.4f}",
                          flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=True)
    for name, results in runs.items():
        print(f"{name}: median {statistics.median(r['seconds'] for r in results):.1f} s over {len(results)} fits")


if __name__ == "__main__":
    main()
