"""Nested scales (``--n-networks 7 17 model.nested=true``) against independent coarse fits -> docs/bench_nested.md.

Usage::

    python scripts/bench_nested.py                      # nesting strengths 0.5 and 1.0, 20 subjects (about 15 min)
    python scripts/bench_nested.py --strength 1.0 --n-subjects 10 --out bench_out/nested

For each strength, simulates a cohort on the Yeo 17-network layout whose networks share a
parent time course within their Yeo 7-network parent (``pavi-parcel simulate --nesting-strength``;
2 sessions x 300 frames, seed 7), then runs ``pavi-parcel fit --n-networks 7 17 model.nested=true``
(one ingest and fingerprint store for both scales). Reported: the fine maps against the planted
17 networks; the nested coarse maps and the coarse scale's own (independent) fit against the
planted labels merged into their planted parents (ARI, ECE); the fraction of fine networks given
their planted parent; and the largest deviation from P(coarse) = sum of P(children) over every
exported soft map (GIFTI, both hemispheres, every subject and the group).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
SEED = 7


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pavi_parcel.cli", *args]


def probseg(path: Path) -> np.ndarray:
    return np.stack([d.data for d in nib.load(path).darrays], axis=1)


def sum_identity_error(fine_dir: Path, coarse_dir: Path) -> tuple[float, int]:
    """Largest |P(coarse) - sum of P(children)| over every exported soft map pair, and the number of pairs."""
    parents = pd.read_csv(fine_dir / "seg-pavi17_parents-pavi7.tsv", sep="\t")
    worst, pairs = 0.0, 0
    for fine in sorted(fine_dir.glob("**/*_seg-pavi17_probseg.func.gii")):
        coarse = coarse_dir / fine.relative_to(fine_dir).with_name(fine.name.replace("pavi17", "pavi7"))
        p_fine, p_coarse = probseg(fine), probseg(coarse)
        for c in range(1, 8):
            children = parents.loc[parents.parent_index == c, "index"].to_numpy() - 1
            worst = max(worst, float(np.abs(p_fine[:, children].sum(axis=1) - p_coarse[:, c - 1]).max()))
        pairs += 1
    return worst, pairs


def bench(out: Path, strength: float, n_subjects: int) -> list[str]:
    from pavi_parcel.io.layout import independent_posterior_path
    from pavi_parcel.simulate.truth import coarsened, load_nesting, load_truth
    from pavi_parcel.stores.posterior import read_posterior
    from pavi_parcel.validation.nesting import parent_recovery
    from pavi_parcel.validation.scoring import truth_metrics

    root = out / f"strength{strength:g}"
    sim, fit = root / "sim", root / "fit"
    if not (sim / "truth").exists():
        subprocess.run(cli("simulate", str(sim), "--n-subjects", str(n_subjects), "--n-frames", "300",
                           "--seed", str(SEED), "--nesting-strength", str(strength)), check=True, capture_output=True)
    start = time.perf_counter()
    subprocess.run(cli("fit", str(sim / "bids"), str(fit), "--n-networks", "7", "17", "model.nested=true",
                       "connectome.enabled=false", "export.report=false"), check=True, capture_output=True)
    seconds = time.perf_counter() - start
    truth = load_truth(sim / "truth")
    coarse_truth = coarsened(truth, load_nesting(sim / "truth")[7])
    fine = truth_metrics(read_posterior(fit / "pavi17" / "model" / "posterior.h5"), truth)
    nested = truth_metrics(read_posterior(fit / "pavi7" / "model" / "posterior.h5"), coarse_truth)
    own = truth_metrics(read_posterior(independent_posterior_path(fit / "pavi7")), coarse_truth)
    parents = parent_recovery(fit / "pavi17", fit / "pavi7", sim / "truth")
    worst, pairs = sum_identity_error(fit / "pavi17", fit / "pavi7")
    return [f"### Nesting strength {strength:g}, {n_subjects} subjects x 2 sessions x 300 frames", "",
            f"`pavi-parcel fit --n-networks 7 17 model.nested=true`: {seconds:.0f} s for both scales "
            f"(one ingest, one fingerprint store). Parents: {parents:.2f} of the fine networks under their "
            f"planted parent. Sum identity: largest deviation {worst:.1e} over {pairs} soft-map files.", "",
            "| maps | against | ARI | ECE |", "|---|---|---|---|",
            f"| K = 17 | planted 17 networks | {fine.ari.mean():.3f} | {fine.ece.mean():.3f} |",
            f"| K = 7, nested (sums of the K = 17 maps) | planted parents | {nested.ari.mean():.3f} | "
            f"{nested.ece.mean():.3f} |",
            f"| K = 7, independent fit | planted parents | {own.ari.mean():.3f} | {own.ece.mean():.3f} |", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out/nested"))
    parser.add_argument("--strength", type=float, nargs="+", default=[0.5, 1.0])
    parser.add_argument("--n-subjects", type=int, default=20)
    parser.add_argument("--report", type=Path, default=HERE.parent / "docs" / "bench_nested.md")
    args = parser.parse_args()
    lines = ["# Nested scales (`scripts/bench_nested.py`)", "",
             f"Command: `python scripts/bench_nested.py --strength {' '.join(f'{s:g}' for s in args.strength)} "
             f"--n-subjects {args.n_subjects}`; 2 cores, one fit at a time.", ""]
    for strength in args.strength:
        lines += bench(args.out, strength, args.n_subjects)
        args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
