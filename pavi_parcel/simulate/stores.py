"""Fingerprint stores simulated directly (no fMRI): planted networks for scale tests and benchmarks."""


from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from pavi_parcel import __version__
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.stores.fingerprints import FingerprintWriter

from .fmri import FP_SIGNAL, coupling, local_kernel, make_subject, session_factors, subject_fingerprints
from .layout import STREAM_LAYOUT, STREAM_SESSION, STREAM_SUBJECT, rng_for
from .plan import (
    DEFAULT_DEVIATION,
    DEFAULT_FINGERPRINT_SNR,
    check_settings,
    full_labels,
    group_plan,
    label_names,
    plain_settings,
    store_complete,
)
from .truth import Truth, write_truth


# --------------------------------------------------------------------------- fingerprint stores
def simulate_fingerprint_store(path: str | Path, n_subjects: int, n_sessions: int = 2, n_networks: int = 17,
                               seed: int = 0, space: str = "fsaverage5", n_seeds: int | None = None,
                               top_fraction: float = 0.1, snr: float = DEFAULT_FINGERPRINT_SNR,
                               layout: str = "auto", deviation: float = DEFAULT_DEVIATION,
                               truth_dir: str | Path | None = None, resolution_mm: int = 4,
                               seed_spacing_mm: float = 12.0, n_jobs: int = 1, progress: bool = True) -> Truth:
    """Write a fingerprint store directly from planted profiles (no fMRI), for scale tests.

    A point ``v`` of subject ``s`` with label ``l`` gets, for session ``t`` and seed ``j``
    (whose label in that subject is ``m``), the correlation
    ``r = a_v * FP_SIGNAL * C_st[l, m] + FP_LOCAL * exp(-d(v, j)^2 / (2 * FP_LOCAL_MM^2)) + noise``,
    with ``C_st`` the session's network coupling (group -> subject -> session), ``a_v`` a smooth
    per-subject strength, ``d`` the distance (sphere or world mm) within a hemisphere, and
    Gaussian noise of standard deviation ``FP_SIGNAL / sqrt(snr)`` and rank ``FP_FRAMES`` across
    seeds (as correlations estimated from a finite run). Rows are then binarised
    (top ``top_fraction``) like real fingerprints. Memory does not grow with ``n_subjects``;
    an interrupted run resumes, and a finished store with the same settings is kept.

    Parameters
    ----------
    path : str or Path
        Target store (``.h5``), written through :class:`pavi_parcel.stores.fingerprints.FingerprintWriter`.
    n_subjects, n_sessions, n_networks, seed, space, layout, deviation, resolution_mm
        As in :func:`simulate_dataset`.
    n_seeds : int or None
        None = the pipeline's default seeds (fsaverage3 vertices on cortex, about 1,175, or a
        ``seed_spacing_mm`` grid in volumes); a smaller number keeps an evenly spread subset.
    top_fraction : float
        Fraction of ones per fingerprint; 0 stores continuous values.
    snr : float
        Profile to noise variance ratio (see above).
    truth_dir : str, Path or None
        Where the planted labels go; default ``<path's folder>/truth``.
    seed_spacing_mm : float
        Volume seeds: one per cube of this side.
    n_jobs : int
        Worker processes computing fingerprints (joblib); the results do not depend on it.
    progress : bool

    Returns
    -------
    Truth
        Also written to ``truth_dir``; ``settings["seconds_per_subject"]`` holds the timing.
    """

    extra = []
    if not 0 <= top_fraction < 1:
        extra.append(BadInputError("Invalid top_fraction", "a fraction in [0, 1)", str(top_fraction),
                                   "pass top_fraction=0.1"))
    if n_seeds is not None and n_seeds < 10:
        extra.append(BadInputError("Too few seeds", "at least 10", str(n_seeds), "pass n_seeds=None"))
    check_settings(n_subjects, n_sessions, snr, deviation, n_networks, space, layout, extra)
    path = Path(path).expanduser().resolve()
    truth_dir = Path(truth_dir) if truth_dir is not None else path.parent / "truth"
    start = time.perf_counter()
    plan = group_plan(space, n_networks, layout, seed, int(resolution_mm))
    sim = plan.sim
    seed_index = sim.info.default_seeds(sim.valid, seed_spacing_mm)
    if n_seeds is not None and n_seeds < seed_index.size:
        seed_index = seed_index[np.unique(np.linspace(0, seed_index.size - 1, n_seeds).round().astype(int))]
    seed_pos = np.searchsorted(sim.valid, seed_index)
    local = local_kernel(sim, seed_pos)
    subjects, sessions = label_names(n_subjects, n_subjects), label_names(n_sessions, n_sessions)
    settings = plain_settings(mode="fingerprints", seed=seed, n_subjects=n_subjects, n_sessions=n_sessions,
                         n_networks=n_networks, space=space, layout=plan.layout, n_seeds=int(seed_index.size),
                         top_fraction=top_fraction, snr=snr, deviation=deviation,
                         resolution_mm=int(resolution_mm), version=__version__)
    subject_labels, achieved = {}, {}
    sigma = float(FP_SIGNAL / np.sqrt(snr))
    if store_complete(path, settings):                      # same settings: only the truth is rewritten
        done = np.ones((n_subjects, n_sessions), dtype=bool)
        writer = None
    else:
        writer = FingerprintWriter(path, subjects, sessions, np.ones((n_subjects, n_sessions), dtype=bool),
                                   sim.valid, seed_index, sim.info, top_fraction, settings)
        done = np.array([[writer.is_done(i, j) for j in range(n_sessions)] for i in range(n_subjects)])

    def tasks():
        for i, sub in enumerate(subjects):
            labels, achieved[sub] = plan.layouts.draw(rng_for(seed, STREAM_LAYOUT, i), deviation)
            subject_labels[sub] = full_labels(sim, labels)
            todo = [j for j in range(n_sessions) if not done[i, j]]
            if not todo:
                continue
            model = make_subject(sim, plan.bank, labels, plan.factors, rng_for(seed, STREAM_SUBJECT, i))
            strength = model.loadings[np.arange(sim.n_valid), labels - 1]
            couplings = [coupling(session_factors(model, rng_for(seed, STREAM_SESSION, i, j))) for j in todo]
            yield delayed(subject_fingerprints)(i, todo, labels, strength, couplings, seed_pos, local, sigma,
                                                 top_fraction, seed)

    if writer is None:
        for _ in tasks():
            pass
    else:
        try:
            with Parallel(n_jobs=n_jobs, return_as="generator", max_nbytes="1M") as parallel:
                for i, entries in tqdm(parallel(tasks()), desc="fingerprints", unit="subject",
                                       total=int((~done).any(axis=1).sum()), disable=not progress):
                    for j, values in entries:
                        writer.write(i, j, values)
            writer.finish()
        except BaseException:
            writer.close()
            raise
    seconds = time.perf_counter() - start
    settings.update(achieved_deviation=achieved, seconds=round(seconds, 2),
                    seconds_per_subject=round(seconds / n_subjects, 4),
                    group_coupling=coupling(plan.factors).round(4).tolist())
    truth = Truth(full_labels(sim, plan.group), subject_labels, plan.names, sim.info,
                  np.asarray(plan.colors, dtype=np.uint8), sessions, settings)
    write_truth(truth_dir, truth)
    return truth


__all__ = ["simulate_fingerprint_store"]
