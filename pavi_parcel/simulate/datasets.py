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
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from pavi_parcel import __version__
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import atomic_write

from .files import write_confounds, write_json, write_run
from .fmri import NOISE_STEPS, coupling, make_subject, session_factors, simulate_run
from .geometry import write_mesh
from .graph import PlantedGraph, covariance_factor, planted_group_precision, subject_precision, write_planted_graph
from .layout import FIELD_ITERATIONS, STREAM_GRAPH, STREAM_LAYOUT, STREAM_RUN, STREAM_SESSION, STREAM_SUBJECT, rng_for
from .plan import (
    DEFAULT_DEVIATION,
    DEFAULT_SNR,
    Plan,
    check_settings,
    deviation_layouts,
    full_labels,
    group_plan,
    label_names,
    plain_settings,
    planted_parents,
)
from .truth import TRUTH_META, Truth, write_nesting, write_truth


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
    mesh_dir : Path or None
        ``OUT_DIR/mesh``: the simulated mesh, for ``data.mesh_dir`` (fsaverage6 only: see
        :mod:`pavi_parcel.simulate.geometry`).
    """

    bids_dir: Path
    truth_dir: Path
    subjects: list[str]
    sessions: list[str]
    space: str
    truth: Truth
    seconds: float = 0.0
    mesh_dir: Path | None = None


def simulate_dataset(out_dir: str | Path, n_subjects: int = 10, n_sessions: int = 2, n_runs: int = 1,
                     n_frames: int = 200, space: str = "fsaverage5", n_networks: int = 17, seed: int = 0,
                     snr: float = DEFAULT_SNR, tr: float = 2.0, layout: str = "auto", resolution_mm: int = 4,
                     deviation: float = DEFAULT_DEVIATION, motion_scale: float = 1.0, n_dummy: int = 2,
                     compress: bool = False, progress: bool = True, deviation_smoothness: int = FIELD_ITERATIONS,
                     n_islands: int = 5, graph_density: float = 0.0, nesting_strength: float = 0.0,
                     noise_smoothness: int = NOISE_STEPS) -> SimulatedDataset:
    """Write a simulated fMRIPrep-derivatives dataset with planted individual networks.

    Parameters
    ----------
    out_dir : str or Path
        Receives ``bids/`` and ``truth/``; a previous simulation there is replaced.
    n_subjects, n_sessions, n_runs : int
        Cohort size; every subject has every session, every session ``n_runs`` runs.
    n_frames : int
        Volumes per run, including ``n_dummy`` non-steady-state volumes.
    space : {"fsaverage5", "fsaverage6", "fsLR", "MNI152NLin2009cAsym"}
        Surface GIFTI pairs (fsaverage5, fsaverage6 with its mesh in ``OUT_DIR/mesh``), CIFTI 91k
        dense time series (fsLR), or NIfTI volumes on nilearn's MNI152 brain mask.
    n_networks : int
        K. The Yeo layout needs 7 or 17.
    seed : int
    snr : float
        Variance of the network signal over that of the thermal noise (motion, physiological
        noise and drift come on top and are removable with the confounds).
    tr : float
        Repetition time (s).
    layout : {"auto", "yeo", "procedural"}
        Group layout; ``auto`` = Yeo 2011 on fsaverage5 and fsLR with 7 or 17 networks, else procedural.
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
    deviation_smoothness : int
        Neighbour-averaging steps of the random fields that move a subject's boundaries away
        from the group's: 0 = salt-and-pepper deviations (no spatial structure), 25 = default,
        100 = coarse, smooth displacements.
    n_islands : int
        Discs (12 mm) per subject taken over by another network (patchy deviations).
    graph_density : float
        0 = networks coupled by low-rank factors (the default); above 0, the networks' time courses
        follow a planted sparse graph with about this fraction of the network pairs connected
        (:mod:`.graph`), saved as ``truth/graph.npz``.
    nesting_strength : float
        0 = no coarser scale planted; above 0 (Yeo 17-network layout only), the networks of one Yeo
        7-network parent share a parent time course of this amplitude (1 = the variance of a
        network's own signal), and the parents go to ``truth/nesting.json``.
    noise_smoothness : int
        Neighbour-averaging steps of the thermal noise: 0 = independent at every vertex or voxel,
        2 = the default.

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
    if nesting_strength < 0 or (nesting_strength > 0 and not (n_networks == 17 and layout in ("auto", "yeo")
                                                              and space in ("fsaverage5", "fsLR"))):
        extra.append(BadInputError("Nesting cannot be planted here", "nesting_strength 0, or the Yeo 17-network "
                                   "layout (fsaverage5 or fsLR, 17 networks) with nesting_strength > 0",
                                   f"{nesting_strength} with {n_networks} networks on {space}",
                                   "pass nesting_strength=0, or simulate 17 Yeo networks"))
    if not 0 <= graph_density <= 1:
        extra.append(BadInputError("Invalid graph density", "a fraction of network pairs in [0, 1]",
                                   str(graph_density), "pass graph_density=0.25 (or 0 for no planted graph)"))
    if int(noise_smoothness) != noise_smoothness or noise_smoothness < 0:
        extra.append(BadInputError("Invalid noise smoothness", "an integer number of neighbour steps >= 0",
                                   str(noise_smoothness), "pass noise_smoothness=2 (or 0 for independent noise)"))
    if int(resolution_mm) != resolution_mm or not 1 <= resolution_mm <= 10:
        extra.append(BadInputError("Invalid resolution_mm", "an integer from 1 to 10", str(resolution_mm),
                                   "pass resolution_mm=4"))
    check_settings(n_subjects, n_sessions, snr, deviation, n_networks, space, layout, extra)
    start = time.perf_counter()
    out_dir = Path(out_dir).expanduser().resolve()
    bids_dir, truth_dir = out_dir / "bids", out_dir / "truth"
    _clear_previous(bids_dir, truth_dir)
    plan = group_plan(space, n_networks, layout, seed, int(resolution_mm))
    subjects, sessions = label_names(n_subjects, n_subjects), label_names(n_sessions, n_sessions)
    _write_dataset_files(bids_dir, subjects, plan, seed)
    layouts = deviation_layouts(plan, int(deviation_smoothness), seed)
    subject_labels, achieved, motion = {}, {}, {}
    group_graph = planted_group_precision(n_networks, graph_density, rng_for(seed, STREAM_GRAPH)) \
        if graph_density > 0 else None
    precisions = []
    nesting = planted_parents(plan) if nesting_strength > 0 else {}
    parents = np.asarray(next(iter(nesting.values())), dtype=np.int64) - 1 if nesting else None
    for i, sub in enumerate(tqdm(subjects, desc="simulate", unit="subject", disable=not progress)):
        labels, achieved[sub] = layouts.draw(rng_for(seed, STREAM_LAYOUT, i), deviation, n_islands=int(n_islands))
        subject_labels[sub] = full_labels(plan.sim, labels)
        model = make_subject(plan.sim, plan.bank, labels, plan.factors, rng_for(seed, STREAM_SUBJECT, i))
        motion[sub] = model.motion_level * motion_scale
        network_factor = None
        if group_graph is not None:
            precisions.append(subject_precision(group_graph, rng_for(seed, STREAM_GRAPH, i)))
            network_factor = covariance_factor(precisions[-1])
        for j, ses in enumerate(sessions):
            factors = session_factors(model, rng_for(seed, STREAM_SESSION, i, j))
            func = bids_dir / f"sub-{sub}" / f"ses-{ses}" / "func"
            for r in range(n_runs):
                stem = func / f"sub-{sub}_ses-{ses}_task-rest_run-{r + 1}"
                run = simulate_run(plan.sim, model, factors, n_frames, tr, rng_for(seed, STREAM_RUN, i, j, r),
                                   snr, n_dummy=n_dummy, motion_scale=motion_scale, network_factor=network_factor,
                                   parents=parents, nesting_strength=nesting_strength,
                                   noise_smoothness=int(noise_smoothness))
                write_run(stem, plan.sim, run.data, tr, int(resolution_mm), compress)
                write_confounds(stem, run.confounds, run.confounds_meta)
    settings = plain_settings(mode="fmri", seed=seed, n_subjects=n_subjects, n_sessions=n_sessions, n_runs=n_runs,
                         n_frames=n_frames, space=space, n_networks=n_networks, layout=plan.layout, snr=snr,
                         tr=tr, resolution_mm=int(resolution_mm), deviation=deviation, motion_scale=motion_scale,
                         n_dummy=n_dummy, deviation_smoothness=int(deviation_smoothness), n_islands=int(n_islands),
                         graph_density=float(graph_density), nesting_strength=float(nesting_strength),
                         noise_smoothness=int(noise_smoothness), achieved_deviation=achieved, motion_level=motion,
                         group_coupling=coupling(plan.factors).round(4).tolist())
    truth = Truth(full_labels(plan.sim, plan.group), subject_labels, plan.names, plan.sim.info,
                  np.asarray(plan.colors, dtype=np.uint8), sessions, settings)
    write_truth(truth_dir, truth)
    if nesting:
        write_nesting(truth_dir, nesting)
    if group_graph is not None:
        write_planted_graph(truth_dir, PlantedGraph(group_graph, np.stack(precisions), subjects))
    mesh_dir = write_mesh(out_dir / "mesh") if space == "fsaverage6" else None
    return SimulatedDataset(bids_dir, truth_dir, subjects, sessions, space, truth,
                            time.perf_counter() - start, mesh_dir)


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


def _write_dataset_files(bids_dir: Path, subjects: list[str], plan: Plan, seed: int) -> None:
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


__all__ = ["SimulatedDataset", "simulate_dataset"]
