"""New subjects: amortized inference (``pavi-parcel apply``) against a full refit that includes them.

Usage::

    python scripts/bench_apply.py --out bench_out/apply [--n-subjects 20] [--n-heldout 4] [--n-networks 17]

Simulates a binarised fingerprint store (fsaverage5, 2 sessions) with ``simulate_fingerprint_store``,
fits PAVI-E on all but the last ``--n-heldout`` subjects, infers the held-out subjects with the
trained encoders (:func:`pavi_parcel.model.new_subjects.infer_subjects`, the inference step of
``pavi-parcel apply``) for several numbers of refinement passes, then refits PAVI-E on every
subject. Reports the held-out subjects' ARI against the planted networks (apply vs refit), the
inference time per subject and the refit time; prints a markdown table and writes it to
``docs/bench_apply.md``. Ingestion and fingerprints are left out on both sides (the same work
for apply and refit).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pavi_parcel.inference.fitted_run import load_model_state
from pavi_parcel.inference.training import fit_model
from pavi_parcel.metrics.scores import adjusted_rand_index
from pavi_parcel.model.new_subjects import infer_subjects
from pavi_parcel.settings.schema import FitSettings, ModelSettings
from pavi_parcel.simulate import simulate_fingerprint_store
from pavi_parcel.simulate.truth import load_truth
from pavi_parcel.stores.fingerprints import FingerprintStore, FingerprintWriter
from pavi_parcel.stores.posterior import read_posterior


def subset_store(source: Path, target: Path, subjects: list[str]) -> Path:
    """Copy some subjects of a fingerprint store (packed rows, unchanged) into a new store."""
    import h5py

    with FingerprintStore(source) as store, h5py.File(source, "r") as h5:
        rows = [store.subjects.index(s) for s in subjects]
        mask = store.session_mask[rows]
        writer = FingerprintWriter(target, subjects, store.sessions, mask, store.vertex_index, store.seed_index,
                                   store.space, float(h5.attrs["top_fraction"]),
                                   {**store.settings, "subset": subjects})
        for i, row in enumerate(rows):
            packed = store.read_packed(row)
            for j in np.flatnonzero(mask[i]):
                if not writer.is_done(i, j):
                    writer.write(i, int(j), packed[j])
        return writer.finish()


def heldout_ari(probs: np.ndarray, labels: list[str], truth, vertex_index: np.ndarray) -> np.ndarray:
    """ARI of each subject's hard map against its planted labels, shape (n_subjects,)."""
    return np.array([adjusted_rand_index(truth.subject_labels[s][vertex_index], p.argmax(-1))
                     for s, p in zip(labels, probs)])


def timed_fit(store: Path, model_dir: Path, k: int, max_minutes: float, threads: int) -> tuple[Path, float]:
    start = time.perf_counter()
    path = fit_model(store, model_dir, ModelSettings(n_networks=k),
                     FitSettings(max_minutes=max_minutes, num_threads=threads), seed=0, device="cpu")
    return path, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/apply"))
    parser.add_argument("--n-subjects", type=int, default=20)
    parser.add_argument("--n-heldout", type=int, default=4)
    parser.add_argument("--n-networks", type=int, default=17)
    parser.add_argument("--refine-steps", type=int, nargs="+", default=[0, 2, 5])
    parser.add_argument("--max-minutes", type=float, default=6.0, help="training cap of each fit")
    parser.add_argument("--num-threads", type=int, default=1, help="torch CPU threads (fits and inference)")
    parser.add_argument("--report", type=Path, default=Path("docs/bench_apply.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)

    out, k = args.out.resolve(), args.n_networks
    full = out / "fingerprints.h5"
    simulate_fingerprint_store(full, n_subjects=args.n_subjects, n_sessions=2, n_networks=k, seed=0,
                               truth_dir=out / "truth")
    truth = load_truth(out / "truth")
    with FingerprintStore(full) as store:
        subjects = list(store.subjects)
    train, heldout = subjects[:-args.n_heldout], subjects[-args.n_heldout:]
    train_store = subset_store(full, out / "train.h5", train)
    heldout_store = subset_store(full, out / "heldout.h5", heldout)

    _, train_seconds = timed_fit(train_store, out / "model_train", k, args.max_minutes, args.num_threads)
    print(f"fit on {len(train)} subjects: {train_seconds:.0f} s", flush=True)
    state = load_model_state(out / "model_train" / "model_state.pt")
    applied = {}
    with FingerprintStore(heldout_store) as store:
        vertex_index = store.vertex_index
        infer_subjects(state, [store.read(0)], 0)  # warm-up (first-call allocations)
        for steps in args.refine_steps:
            probs, seconds = [], []
            for s in range(store.n_subjects):  # the inference step of apply: read, encode, refine, label
                start = time.perf_counter()
                probs.append(infer_subjects(state, [store.read(s)], steps)[0])
                seconds.append(time.perf_counter() - start)
            applied[steps] = (heldout_ari(np.stack(probs), heldout, truth, vertex_index), np.asarray(seconds))
            print(f"apply, {steps} refinement passes: ARI {applied[steps][0].mean():.3f}, "
                  f"{np.median(seconds):.2f} s/subject (median)", flush=True)

    refit_path, refit_seconds = timed_fit(full, out / "model_refit", k, args.max_minutes, args.num_threads)
    refit = read_posterior(refit_path)
    rows = [refit.subjects.index(s) for s in heldout]
    refit_ari = heldout_ari(refit.subject_probs[rows], heldout, truth, refit.vertex_index)
    train_rows = [refit.subjects.index(s) for s in train]
    refit_train_ari = heldout_ari(refit.subject_probs[train_rows], train, truth, refit.vertex_index).mean()
    print(f"refit on {len(subjects)} subjects: {refit_seconds:.0f} s, held-out ARI {refit_ari.mean():.3f}", flush=True)

    command = (f"python scripts/bench_apply.py --n-subjects {args.n_subjects} --n-heldout {args.n_heldout} "
               f"--n-networks {k} --refine-steps {' '.join(map(str, args.refine_steps))} "
               f"--max-minutes {args.max_minutes:g} --num-threads {args.num_threads}")
    lines = [f"## New subjects: apply vs refit, {args.n_subjects} subjects x 2 sessions ({args.n_heldout} held out), "
             f"fsaverage5, K={k}", "", f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
             f"CPU. Fit on {len(train)} subjects: {train_seconds:.0f} s. Full refit on {len(subjects)} subjects: "
             f"{refit_seconds:.0f} s (training subjects' mean ARI in the refit {refit_train_ari:.3f}).", "",
             "Targets: held-out ARI within 0.02 of the refit's, at most a tenth of the refit's time, "
             "at most 5 s per subject for the inference step.", "",
             "Inference step = reading the subject's fingerprints, the encoders' forward pass, the refinement "
             "passes and the calibrated labels (`infer_subjects`), timed per subject after one warm-up call. "
             "Ingestion and fingerprints are left out on both sides: a refit needs them for the new subjects "
             "too.", "",
             "| held-out subjects mapped by | refine steps | mean ARI | min ARI | ARI - refit ARI | "
             "inference s/subject, median (max) | inference of all held-out / refit time |",
             "|---|---|---|---|---|---|---|"]
    for steps, (ari, seconds) in applied.items():
        lines.append(f"| apply (trained encoders) | {steps} | {ari.mean():.3f} | {ari.min():.3f} | "
                     f"{ari.mean() - refit_ari.mean():+.3f} | {np.median(seconds):.2f} ({seconds.max():.2f}) | "
                     f"{seconds.sum() / refit_seconds:.4f} |")
    lines.append(f"| full refit (all subjects) | - | {refit_ari.mean():.3f} | {refit_ari.min():.3f} | +0.000 | "
                 f"{refit_seconds / len(heldout):.0f} (refit / held-out) | 1 |")
    lines += ["", "Per-subject held-out ARI (apply with the default 2 refinement passes / refit): "
              + ", ".join(f"sub-{s} {a:.3f}/{r:.3f}" for s, a, r in
                          zip(heldout, applied.get(2, next(iter(applied.values())))[0], refit_ari)), ""]
    text = "\n".join(lines)
    print(text)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)


if __name__ == "__main__":
    main()
