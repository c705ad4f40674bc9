"""Synthetic cohorts with planted networks: fMRIPrep-style datasets or fingerprint stores.

:func:`simulate_dataset` writes ``OUT_DIR/bids/`` (an fMRIPrep-derivatives dataset: BOLD
runs, sidecars, confounds) and ``OUT_DIR/truth/`` (the planted labels, outside the BIDS
tree); :func:`simulate_fingerprint_store` writes a fingerprint store directly, for scale
tests with hundreds to thousands of subjects. Both share the same planted structure:

- group layout: the Yeo 2011 atlas (fsaverage5, 7 or 17 networks) or procedural Voronoi
  cells (any K, surfaces and volumes); see :mod:`pavi_parcel.simulate.layout`;
- subjects: the group layout with boundaries moved by label competition with smooth random
  fields, and islands of other networks, so that a fraction ``deviation`` of the points
  differs from the group;
- network coupling: hierarchical, group -> subject -> session;
- fMRI signal and nuisance model: :mod:`pavi_parcel.simulate.fmri`.

Everything is determined by ``seed``: each subject, session and run draws from its own
generator ``SeedSequence([seed, stream, subject, session, run])``, so results do not depend
on the order or parallelism of the work. The same seed and settings give the same planted
labels in both modes.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from pavi_parcel import __version__
from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.io.atomic import atomic_write

from .files import write_confounds, write_json, write_surface_run, write_volume_run
from .fmri import (
    FP_SIGNAL,
    coupling,
    group_factors,
    local_kernel,
    make_subject,
    session_factors,
    simulate_run,
    subject_fingerprints,
)
from .layout import (
    STREAM_BANK,
    STREAM_GROUP,
    STREAM_LAYOUT,
    STREAM_RUN,
    STREAM_SESSION,
    STREAM_SUBJECT,
    FieldBank,
    SimSpace,
    SubjectLayouts,
    build_space,
    check_space,
    group_layout,
    rng_for,
)
from .truth import TRUTH_META, Truth, write_truth

__all__ = ["DEFAULT_DEVIATION", "DEFAULT_FINGERPRINT_SNR", "DEFAULT_SNR", "SimulatedDataset", "simulate_dataset", "simulate_fingerprint_store"]

DEFAULT_SNR = 0.3
"""Network-signal to thermal-noise variance ratio of the fMRI simulator."""
DEFAULT_FINGERPRINT_SNR = 0.8
"""Profile to correlation-noise variance ratio of the direct fingerprint simulator."""
DEFAULT_DEVIATION = 0.2
"""Fraction of points whose subject label differs from the group layout."""


# --------------------------------------------------------------------------- shared planting
@dataclass
class _Plan:
    sim: SimSpace
    group: np.ndarray           # (n_valid,) 1..K
    names: list[str]
    colors: np.ndarray
    bank: FieldBank
    layouts: SubjectLayouts
    factors: np.ndarray         # (K, r) group coupling factors
    layout: str


@lru_cache(maxsize=4)
def _plan(space: str, n_networks: int, layout: str, seed: int, resolution_mm: int) -> _Plan:
    """The group-level plan (read-only once built, so cached per process)."""
    from pavi_parcel.atlas.references import default_colors, load_yeo

    sim = build_space(space, resolution_mm)
    if layout == "auto":
        layout = "yeo" if sim.info.is_surface and n_networks in (7, 17) else "procedural"
    rng = rng_for(seed, STREAM_GROUP)
    group, names = group_layout(sim, layout, n_networks, rng)
    colors = load_yeo(n_networks).colors if layout == "yeo" else default_colors(n_networks)
    bank = FieldBank(sim, rng_for(seed, STREAM_BANK))
    return _Plan(sim, group, names, colors, bank, SubjectLayouts(sim, group, n_networks, bank),
                 group_factors(n_networks, rng), layout)


def _full(sim: SimSpace, values: np.ndarray) -> np.ndarray:
    out = np.zeros(sim.info.n_total, dtype=np.int16)
    out[sim.valid] = values
    return out


def _labels(prefix_count: int, n: int) -> list[str]:
    width = max(2, len(str(prefix_count)))
    return [f"{i:0{width}d}" for i in range(1, n + 1)]


def _validate(n_subjects: int, n_sessions: int, snr: float, deviation: float, n_networks: int,
              space: str, layout: str, extra: list[BadInputError] | None = None) -> None:
    errors = list(extra or [])
    if n_subjects < 1:
        errors.append(BadInputError("Invalid number of subjects", "at least 1", str(n_subjects), "raise --n-subjects"))
    if n_sessions < 1:
        errors.append(BadInputError("Invalid number of sessions", "at least 1", str(n_sessions), "raise --n-sessions"))
    if not snr > 0:
        errors.append(BadInputError("Invalid snr", "a positive number", str(snr), "pass snr > 0"))
    if not 0 <= deviation < 0.9:
        errors.append(BadInputError("Invalid deviation", "a fraction in [0, 0.9)", str(deviation),
                                    "pass deviation=0.2"))
    if n_networks < 2:
        errors.append(BadInputError("Invalid number of networks", "at least 2", str(n_networks), "raise --n-networks"))
    if layout not in ("auto", "yeo", "procedural"):
        errors.append(BadInputError(f"Unknown layout {layout!r}", "auto, yeo or procedural", repr(layout),
                                    "pass layout='auto'"))
    try:
        check_space(space)
    except BadInputError as exc:
        errors.append(exc)
    if layout == "yeo" and (space != "fsaverage5" or n_networks not in (7, 17)):
        errors.append(BadInputError("The Yeo layout needs fsaverage5 and 7 or 17 networks",
                                    "space fsaverage5 with n_networks 7 or 17",
                                    f"space {space} with {n_networks} networks",
                                    "use layout='procedural' (or 'auto') for other spaces or network counts"))
    if errors:
        raise BadInputErrors(errors)


def _settings(**kwargs: Any) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in kwargs.items()}


# --------------------------------------------------------------------------- fMRI datasets
@dataclass
class SimulatedDataset:
    """Where a simulated dataset was written, and what was planted.

    Attributes
    ----------
    bids_dir : Path
        ``OUT_DIR/bids``: the fMRIPrep-derivatives dataset.
    truth_dir : Path
        ``OUT_DIR/truth``: planted labels (:func:`load_truth`).
    subjects, sessions : list of str
        Labels without ``sub-`` / ``ses-``.
    space : str
    truth : Truth
    seconds : float
        Wall time of the simulation.
    """

    bids_dir: Path
    truth_dir: Path
    subjects: list[str]
    sessions: list[str]
    space: str
    truth: Truth
    seconds: float = 0.0


def simulate_dataset(out_dir: str | Path, n_subjects: int = 10, n_sessions: int = 2, n_runs: int = 1,
                     n_frames: int = 200, space: str = "fsaverage5", n_networks: int = 17, seed: int = 0,
                     snr: float = DEFAULT_SNR, tr: float = 2.0, layout: str = "auto", resolution_mm: int = 4,
                     deviation: float = DEFAULT_DEVIATION, motion_scale: float = 1.0, n_dummy: int = 2,
                     compress: bool = False, progress: bool = True) -> SimulatedDataset:
    """Write a simulated fMRIPrep-derivatives dataset with planted individual networks.

    Parameters
    ----------
    out_dir : str or Path
        Receives ``bids/`` and ``truth/``; a previous simulation there is replaced.
    n_subjects, n_sessions, n_runs : int
        Cohort size; every subject has every session, every session ``n_runs`` runs.
    n_frames : int
        Volumes per run, including ``n_dummy`` non-steady-state volumes.
    space : {"fsaverage5", "MNI152NLin2009cAsym"}
        Surface GIFTI pairs, or NIfTI volumes on nilearn's MNI152 brain mask.
    n_networks : int
        K. The Yeo layout needs 7 or 17.
    seed : int
    snr : float
        Variance of the network signal over that of the thermal noise (motion, physiological
        noise and drift come on top and are removable with the confounds).
    tr : float
        Repetition time (s).
    layout : {"auto", "yeo", "procedural"}
        Group layout; ``auto`` = Yeo 2011 on fsaverage5 with 7 or 17 networks, else procedural.
    resolution_mm : int
        Voxel size of volume runs (``res-<resolution_mm>`` in the file names).
    deviation : float
        Fraction of points whose subject label differs from the group layout.
    motion_scale : float
        0 = no head motion; 1 = default (subject motion levels vary log-normally).
    n_dummy : int
        Non-steady-state volumes at the start of every run (``non_steady_state_outlierXX``).
    compress : bool
        Gzip-compress GIFTI arrays (30 % smaller, about 6x slower to write).
    progress : bool
        Show a progress bar.

    Returns
    -------
    SimulatedDataset
    """
    extra = []
    if n_runs < 1:
        extra.append(BadInputError("Invalid number of runs", "at least 1", str(n_runs), "raise --n-runs"))
    if n_frames < n_dummy + 20:
        extra.append(BadInputError("Too few frames", f"at least {n_dummy + 20}", str(n_frames), "raise --n-frames"))
    if not tr > 0:
        extra.append(BadInputError("Invalid repetition time", "tr > 0 seconds", str(tr), "pass tr=2.0"))
    if int(resolution_mm) != resolution_mm or not 1 <= resolution_mm <= 10:
        extra.append(BadInputError("Invalid resolution_mm", "an integer from 1 to 10", str(resolution_mm),
                                   "pass resolution_mm=4"))
    _validate(n_subjects, n_sessions, snr, deviation, n_networks, space, layout, extra)
    start = time.perf_counter()
    out_dir = Path(out_dir).expanduser().resolve()
    bids_dir, truth_dir = out_dir / "bids", out_dir / "truth"
    _clear_previous(bids_dir, truth_dir)
    plan = _plan(space, n_networks, layout, seed, int(resolution_mm))
    subjects, sessions = _labels(n_subjects, n_subjects), _labels(n_sessions, n_sessions)
    _write_dataset_files(bids_dir, subjects, plan, seed)
    subject_labels, achieved, motion = {}, {}, {}
    for i, sub in enumerate(tqdm(subjects, desc="simulate", unit="subject", disable=not progress)):
        labels, achieved[sub] = plan.layouts.draw(rng_for(seed, STREAM_LAYOUT, i), deviation)
        subject_labels[sub] = _full(plan.sim, labels)
        model = make_subject(plan.sim, plan.bank, labels, plan.factors, rng_for(seed, STREAM_SUBJECT, i))
        motion[sub] = model.motion_level * motion_scale
        for j, ses in enumerate(sessions):
            factors = session_factors(model, rng_for(seed, STREAM_SESSION, i, j))
            func = bids_dir / f"sub-{sub}" / f"ses-{ses}" / "func"
            for r in range(n_runs):
                stem = func / f"sub-{sub}_ses-{ses}_task-rest_run-{r + 1}"
                run = simulate_run(plan.sim, model, factors, n_frames, tr, rng_for(seed, STREAM_RUN, i, j, r),
                                   snr, n_dummy=n_dummy, motion_scale=motion_scale)
                if plan.sim.info.is_surface:
                    write_surface_run(stem, plan.sim, run.data, tr, compress)
                else:
                    write_volume_run(stem, plan.sim, run.data, tr, int(resolution_mm), write_mask=True)
                write_confounds(stem, run.confounds, run.confounds_meta)
    settings = _settings(mode="fmri", seed=seed, n_subjects=n_subjects, n_sessions=n_sessions, n_runs=n_runs,
                         n_frames=n_frames, space=space, n_networks=n_networks, layout=plan.layout, snr=snr,
                         tr=tr, resolution_mm=int(resolution_mm), deviation=deviation, motion_scale=motion_scale,
                         n_dummy=n_dummy, achieved_deviation=achieved, motion_level=motion,
                         group_coupling=coupling(plan.factors).round(4).tolist())
    truth = Truth(_full(plan.sim, plan.group), subject_labels, plan.names, plan.sim.info,
                  np.asarray(plan.colors, dtype=np.uint8), sessions, settings)
    write_truth(truth_dir, truth)
    return SimulatedDataset(bids_dir, truth_dir, subjects, sessions, space, truth,
                            time.perf_counter() - start)


def _clear_previous(bids_dir: Path, truth_dir: Path) -> None:
    """Remove an earlier simulation in the same place; refuse to touch anything else."""
    description = bids_dir / "dataset_description.json"
    if bids_dir.exists() and any(bids_dir.iterdir()):
        ours = False
        if description.is_file():
            try:
                generated = json.loads(description.read_text()).get("GeneratedBy", [{}])
                ours = any(g.get("Name") == "pavi-parcel simulate" for g in generated)
            except (json.JSONDecodeError, AttributeError):
                ours = False
        if not ours:
            raise BadInputError(f"{bids_dir} already holds other files", "an empty or new folder",
                                "a folder that is not a pavi-parcel simulation", "choose another OUT_DIR")
        shutil.rmtree(bids_dir)
    if truth_dir.exists() and (truth_dir / TRUTH_META).is_file():
        shutil.rmtree(truth_dir)


def _store_complete(path: Path, settings: dict[str, Any]) -> bool:
    """True when ``path`` is a finished store made with exactly these settings."""
    import h5py

    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as h5:
            return h5.attrs.get("settings") == json.dumps(settings, sort_keys=True)
    except OSError:
        return False


def _write_dataset_files(bids_dir: Path, subjects: list[str], plan: _Plan, seed: int) -> None:
    write_json(bids_dir / "dataset_description.json", {
        "Name": "pavi-parcel simulated resting-state cohort",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "pavi-parcel simulate", "Version": __version__,
                         "CodeURL": "https://github.com/pavi-parcel/pavi-parcel",
                         "Description": f"fMRIPrep-style outputs, {plan.layout} layout, seed {seed}"}],
        "HowToAcknowledge": "Synthetic data; the Yeo layout is from Yeo et al. (2011), J Neurophysiol 106:1125.",
    })
    with atomic_write(bids_dir / "participants.tsv") as tmp:
        tmp.write_text("participant_id\n" + "".join(f"sub-{s}\n" for s in subjects))
    write_json(bids_dir / "participants.json", {"participant_id": {"Description": "Simulated participant"}})


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
    from pavi_parcel.stores.fingerprints import FingerprintWriter

    extra = []
    if not 0 <= top_fraction < 1:
        extra.append(BadInputError("Invalid top_fraction", "a fraction in [0, 1)", str(top_fraction),
                                   "pass top_fraction=0.1"))
    if n_seeds is not None and n_seeds < 10:
        extra.append(BadInputError("Too few seeds", "at least 10", str(n_seeds), "pass n_seeds=None"))
    _validate(n_subjects, n_sessions, snr, deviation, n_networks, space, layout, extra)
    path = Path(path).expanduser().resolve()
    truth_dir = Path(truth_dir) if truth_dir is not None else path.parent / "truth"
    start = time.perf_counter()
    plan = _plan(space, n_networks, layout, seed, int(resolution_mm))
    sim = plan.sim
    seed_index = sim.info.default_seeds(sim.valid, seed_spacing_mm)
    if n_seeds is not None and n_seeds < seed_index.size:
        seed_index = seed_index[np.unique(np.linspace(0, seed_index.size - 1, n_seeds).round().astype(int))]
    seed_pos = np.searchsorted(sim.valid, seed_index)
    local = local_kernel(sim, seed_pos)
    subjects, sessions = _labels(n_subjects, n_subjects), _labels(n_sessions, n_sessions)
    settings = _settings(mode="fingerprints", seed=seed, n_subjects=n_subjects, n_sessions=n_sessions,
                         n_networks=n_networks, space=space, layout=plan.layout, n_seeds=int(seed_index.size),
                         top_fraction=top_fraction, snr=snr, deviation=deviation,
                         resolution_mm=int(resolution_mm), version=__version__)
    subject_labels, achieved = {}, {}
    sigma = float(FP_SIGNAL / np.sqrt(snr))
    if _store_complete(path, settings):                      # same settings: only the truth is rewritten
        done = np.ones((n_subjects, n_sessions), dtype=bool)
        writer = None
    else:
        writer = FingerprintWriter(path, subjects, sessions, np.ones((n_subjects, n_sessions), dtype=bool),
                                   sim.valid, seed_index, sim.info, top_fraction, settings)
        done = np.array([[writer.is_done(i, j) for j in range(n_sessions)] for i in range(n_subjects)])

    def tasks():
        for i, sub in enumerate(subjects):
            labels, achieved[sub] = plan.layouts.draw(rng_for(seed, STREAM_LAYOUT, i), deviation)
            subject_labels[sub] = _full(sim, labels)
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
    truth = Truth(_full(sim, plan.group), subject_labels, plan.names, sim.info,
                  np.asarray(plan.colors, dtype=np.uint8), sessions, settings)
    write_truth(truth_dir, truth)
    return truth

