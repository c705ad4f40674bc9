"""Atlas prior for a single subject: held-out homogeneity of the subject's map against the atlas.

For each K in {7, 17}, simulator SNR and seed, one subject with one session of two 8-minute runs
(240 frames at TR 2 s) is simulated on the Yeo 2011 layout. The model is fitted on run 1 only
(``--prior yeoK``), and the maps are scored on run 2, ingested the same way:

- homogeneity (Schaefer 2018 / Kong 2019: mean within-network correlation, size-weighted) of
  the subject's map, of the Yeo atlas itself, of a fit without prior, and of the planted truth
  (the ceiling), on held-out run 2;
- adjusted Rand index of each map against the subject's planted networks.

Both ingestion strategies are run: the default ``[motion, wm_csf, high_pass, scrub]`` and the
same plus ``global_signal``. Results go to ``docs/bench_prior.md``.

Usage::

    python scripts/bench_prior.py                      # K = 7 and 17, SNR 0.3 and 0.1, seeds 0 1
    python scripts/bench_prior.py --k 7 --seeds 0 --snr 0.3 --out /tmp/bench_prior
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = {"default": ["motion", "wm_csf", "high_pass", "scrub"],
              "gsr": ["motion", "wm_csf", "high_pass", "scrub", "global_signal"]}


def split_runs(bids: Path, out: Path, keep: str) -> Path:
    """A BIDS copy (symlinks) holding only the files of run ``keep`` (plus dataset files)."""
    if out.exists():
        shutil.rmtree(out)
    for path in bids.rglob("*"):
        if path.is_dir():
            continue
        rel = path.relative_to(bids)
        if "_run-" in path.name and f"_run-{keep}_" not in path.name:
            continue
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    return out


def heldout_series(bids: Path, work: Path, strategy: list[str]):
    """Ingest the held-out run(s) the way the fit ingested run 1: (frames, vertices), vertex index."""
    from pavi_parcel.bids.discovery import find_runs
    from pavi_parcel.ingest.cleaning import ingest_runs
    from pavi_parcel.settings.compose import compose
    from pavi_parcel.stores.timeseries import read_run_timeseries

    cfg = compose([f"bids_dir={bids}", f"out_dir={work}", f"ingest.strategy=[{','.join(strategy)}]"])
    runs = find_runs(bids, space="fsaverage5")
    [path] = ingest_runs(runs, work, cfg.ingest, n_jobs=1)
    series = read_run_timeseries(path)
    return series.data, np.asarray(series.vertex_index)


def fit_run1(bids1: Path, out: Path, k: int, strategy: list[str], prior: bool, seed: int, max_minutes: float,
             extra: list[str]):
    """Fit on run 1 through the pipeline (ingest, fingerprints, fit); the posterior."""
    from pavi_parcel.settings.compose import compose
    from pavi_parcel.stores.posterior import read_posterior
    from pavi_parcel.workflows.pipeline import run

    items = [f"bids_dir={bids1}", f"out_dir={out}", f"model.n_networks={k}", f"seed={seed}",
             f"ingest.strategy=[{','.join(strategy)}]", "n_jobs=1", "fit.num_threads=1", "device=cpu",
             f"fit.max_minutes={max_minutes}", "stop_after=fit", "force=true", *extra]
    if prior:
        items.append(f"model.prior=yeo{k}")
    start = time.perf_counter()
    run(compose(items))
    return read_posterior(out / "model" / "posterior.h5"), time.perf_counter() - start


def score(labels: np.ndarray, truth: np.ndarray, data: np.ndarray) -> tuple[float, float]:
    """(held-out homogeneity, ARI vs planted truth) of a hard map on the common vertices."""
    from pavi_parcel.metrics.scores import adjusted_rand_index, homogeneity

    return homogeneity(labels, data), adjusted_rand_index(labels, truth)


def bench_one(k: int, seed: int, snr: float, root: Path, max_minutes: float, with_baseline: bool,
              extra: list[str]) -> list[dict]:
    from pavi_parcel.atlas.references import load_yeo
    from pavi_parcel.simulate import simulate_dataset

    tag = f"k{k}-s{seed}-snr{snr:g}"
    sim = simulate_dataset(root / f"sim-{tag}", n_subjects=1, n_sessions=1, n_runs=2, n_frames=240,
                           tr=2.0, n_networks=k, layout="yeo", seed=seed, snr=snr, progress=False)
    bids1 = split_runs(sim.bids_dir, root / f"fit-{tag}" / "bids", "1")
    bids2 = split_runs(sim.bids_dir, root / f"heldout-{tag}" / "bids", "2")
    truth_full = sim.truth.subject_labels[sim.subjects[0]]
    yeo = load_yeo(k).labels
    rows = []
    for name, strategy in STRATEGIES.items():
        data, vidx = heldout_series(bids2, root / f"heldout-{tag}" / f"work-{name}", strategy)
        maps = {}
        post, seconds = fit_run1(bids1, root / f"out-{tag}-{name}-prior", k, strategy, True, seed, max_minutes,
                                 extra)
        maps["subject, --prior"] = (post, seconds)
        if with_baseline:
            post0, sec0 = fit_run1(bids1, root / f"out-{tag}-{name}-noprior", k, strategy, False, seed,
                                   max_minutes, extra)
            maps["subject, no prior"] = (post0, sec0)
        common, in_post, in_data = np.intersect1d(post.vertex_index, vidx, return_indices=True)
        series = data[:, in_data]
        truth = truth_full[common] - 1
        keep = truth >= 0
        row = {"K": k, "snr": snr, "seed": seed, "strategy": name}
        for label, (p, sec) in maps.items():
            hard = p.subject_probs[0, in_post].argmax(1)
            row[f"hom {label}"], row[f"ari {label}"] = score(hard[keep], truth[keep], series[:, keep])
            row[f"sec {label}"] = sec
        row["hom atlas"], row["ari atlas"] = score(yeo[common][keep] - 1, truth[keep], series[:, keep])
        row["hom truth"], row["ari truth"] = score(truth[keep], truth[keep], series[:, keep])
        rows.append(row)
        print({k_: (round(v, 4) if isinstance(v, float) else v) for k_, v in row.items()}, flush=True)
    return rows


NOTES = """\
## Limits, measured separately

- Why the atlas calibration matters: the same fit with `model.calibration=none` (the ELBO-learned
  label weights) overrules the atlas on noise. K = 17, SNR 0.1, seed 0: homogeneity 0.0698
  (default) / 0.0453 (gsr) against the atlas's 0.0771 / 0.0532, ARI 0.49 against 0.63.
  Command: `python scripts/bench_prior.py --k 17 --seeds 0 --snr 0.1 --baseline-seeds --set model.calibration=none`.
- Where it stops: at SNR 0.05 (a run that barely carries the networks) the map stays on par with the
  atlas, not above it. K = 17, seed 0: homogeneity 0.0444 / 0.0311 (gsr) against 0.0448 / 0.0317,
  ARI 0.632 against 0.635 (the fit without prior: 0.12 / 0.13).
  Command: `python scripts/bench_prior.py --k 17 --seeds 0 --snr 0.05`.
- With strong data and few networks (K = 7, SNR 0.3) the atlas calibration is conservative: ARI
  0.83 against 0.85 for the uncalibrated fit without prior (homogeneity 0.2205 against 0.2219).
- The simulated deviation from the atlas (20 %) equals the default `prior_floor` (0.2); the
  temperature is chosen without truth, but how real individuals deviate from Yeo 2011 is what
  real data will test.
"""


def to_markdown(rows: list[dict], command: str, seconds: float) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    hom = [("hom subject, --prior", "subject, --prior"), ("hom atlas", "Yeo atlas"),
           ("hom subject, no prior", "subject, no prior"), ("hom truth", "planted truth")]
    ari = [("ari subject, --prior", "subject, --prior"), ("ari atlas", "Yeo atlas"),
           ("ari subject, no prior", "subject, no prior")]

    def table(pairs):
        present = [(c, h) for c, h in pairs if c in df]
        out = ["| K | SNR | strategy | seed | " + " | ".join(h for _, h in present) + " |",
               "|---|---|---|---|" + "---|" * len(present)]

        def cell(v, bold=False):
            text = "n/a" if pd.isna(v) else f"{v:.4f}"
            return f"**{text}**" if bold and text != "n/a" else text

        for (k, snr, strat), g in df.groupby(["K", "snr", "strategy"], sort=False):
            for _, r in g.iterrows():
                out.append(f"| {k} | {snr:g} | {strat} | {r['seed']} | " + " | ".join(cell(r[c]) for c, _ in present)
                           + " |")
            out.append(f"| {k} | {snr:g} | {strat} | **mean** | "
                       + " | ".join(cell(g[c].mean(), True) for c, _ in present) + " |")
        return out

    wins = df["hom subject, --prior"] > df["hom atlas"]
    lines = ["# Atlas prior for a single subject (`--prior yeo7|yeo17`)", "",
             "One simulated subject, one session, two runs of 240 frames at TR 2 s (8 minutes each), on the Yeo",
             "2011 layout (fsaverage5); the subject's networks differ from the atlas at about 20 % of the",
             "vertices (boundary shifts and islands). The model is fitted on run 1 only with `--prior yeoK`",
             "(`pavi-parcel fit` defaults otherwise: PAVI-E, `prior_floor` 0.2, the label posteriors calibrated",
             "against the atlas since there is no second session). Run 2, ingested the same way, is held out.",
             "",
             "- homogeneity: mean Pearson correlation between the held-out time series of vertices of the same",
             "  network, size-weighted over networks (Schaefer 2018, Kong 2019),",
             "  `pavi_parcel.metrics.scores.homogeneity`;",
             "- ARI: adjusted Rand index against the subject's planted networks;",
             "- `default` ingestion = `[motion, wm_csf, high_pass, scrub]`; `gsr` adds `global_signal`;",
             "- SNR: network-signal to thermal-noise variance ratio of the simulator (0.3 is its default;",
             "  0.1 is a harder, noisier run);",
             "- `subject, no prior`: the same fit without `--prior` (k-means start, flat spatial prior; not",
             "  calibrated, as calibration needs two sessions), on the first seed only; `planted truth`: the",
             "  homogeneity of the true map, the ceiling.",
             "",
             f"Command: `{command}` ({seconds / 60:.1f} min on 2 shared CPU cores).", "",
             f"**The subject's map beats the Yeo atlas on held-out homogeneity in {int(wins.sum())} of {len(df)} "
             "runs.**", "", "## Held-out homogeneity (higher is better)", ""]
    lines += table(hom)
    lines += ["", "## Adjusted Rand index against the planted subject networks", ""]
    lines += table(ari)
    secs = [c for c in df if c.startswith("sec ")]
    lines += ["", "Wall time per fit (ingest + fingerprints + fit of run 1, s): "
              + ", ".join(f"{c[4:]} {df[c].mean():.0f}" for c in secs), "", NOTES]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[7, 17])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--snr", type=float, nargs="+", default=[0.3, 0.1],
                        help="network-signal to thermal-noise variance ratio of the simulation (default 0.3)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="extra config overrides")
    parser.add_argument("--out", type=Path, default=Path("/tmp/pavi-bench-prior"))
    parser.add_argument("--max-minutes", type=float, default=2.0, help="fit.max_minutes of each fit")
    parser.add_argument("--baseline-seeds", type=int, nargs="*", default=[0],
                        help="seeds that also get a fit without prior (none: pass the flag alone)")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "bench_prior.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = []
    for k in args.k:
        for snr in args.snr:
            for seed in args.seeds:
                rows += bench_one(k, seed, snr, args.out, args.max_minutes, seed in args.baseline_seeds,
                                  list(args.set))
    seconds = time.perf_counter() - start
    command = "python scripts/bench_prior.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = to_markdown(rows, command.strip(), seconds)
    from pavi_parcel.io.atomic import atomic_write

    with atomic_write(args.doc) as tmp:
        tmp.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
