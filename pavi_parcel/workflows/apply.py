"""New subjects: parcellate participants left out of the fit with the trained model (``pavi-parcel apply``).

The trained run is never changed: its config, ``model/`` files and fingerprint store are only
read. A new participant goes through the training run's ingest settings, gets fingerprints on
the training vertices and seeds, is inferred by the trained encoders (a forward pass plus
``refine_steps`` refinement passes, :func:`pavi_parcel.model.new_subjects.infer_subjects`) under the
trained group model, and is exported like a training subject (fingerprints:
:mod:`pavi_parcel.fingerprints.new_subjects`)::

    OUT_DIR/work/apply/timeseries/<run>.h5             cleaned runs (cache, reused on rerun)
    OUT_DIR/work/apply/sub-<label>_fingerprints.h5     one subject, training vertices and seeds
    OUT_DIR/model/applied/sub-<label>_posterior.h5     q(y) of the subject, posterior.h5 layout
    OUT_DIR/sub-<label>/anat/...                        maps, same names and label table as training

``pavi-parcel export maps`` re-exports applied subjects with the training subjects, so a new
``--reference`` renames them too. Every input problem is reported before anything is written.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pavi_parcel.atlas.naming import read_label_table
from pavi_parcel.bids.discovery import AUTO, find_runs
from pavi_parcel.bids.entities import normalize_label
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.export.maps import export_applied, export_maps, sidecar_path
from pavi_parcel.fingerprints.new_subjects import subject_fingerprints
from pavi_parcel.inference.device import torch_threads
from pavi_parcel.inference.fitted_run import FittedRun, load_fitted_run
from pavi_parcel.inference.smoothing import potts_neighbours
from pavi_parcel.ingest.cleaning import ingest_runs
from pavi_parcel.ingest.quality import assess_runs
from pavi_parcel.ingest.runcheck import check_on_grid, plan_runs
from pavi_parcel.io.layout import (
    applied_posterior_path,
    config_path,
    group_maps_folder,
    is_pavi_output,
    label_table_path,
)
from pavi_parcel.io.locks import work_lock
from pavi_parcel.model.new_subjects import infer_subjects
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.posterior import Posterior, write_posterior

log = logging.getLogger(__name__)


@dataclass
class AppliedSubjects:
    """Outcome of :func:`apply_subjects`.

    Attributes
    ----------
    subjects : list of str
        Labels without ``sub-``, in the order given.
    posteriors : list of Path
        ``model/applied/sub-<label>_posterior.h5``, one per subject.
    maps : list of Path
        Every map and sidecar written.
    inference_seconds : dict of str -> float
        Wall time of the inference step (encoders and refinement) per subject.
    """

    subjects: list[str]
    posteriors: list[Path]
    maps: list[Path] = field(default_factory=list)
    inference_seconds: dict[str, float] = field(default_factory=dict)


def apply_subjects(out_dir: str | Path, bids_dir: str | Path, participants: Sequence[str],
                   refine_steps: int | None = None, n_jobs: int | None = None,
                   export: bool = True) -> AppliedSubjects:
    """Parcellate new participants with a trained run, without refitting or changing it.

    Parameters
    ----------
    out_dir : str or Path
        Output folder of a finished ``pavi-parcel fit``.
    bids_dir : str or Path
        BIDS dataset holding the new participants (the training dataset or another one).
    participants : sequence of str
        Labels with or without ``sub-``; none may be a training participant.
    refine_steps : int, optional
        Refinement passes of the encoders over each subject's vertices; default
        ``fit.refine_steps`` of the trained run.
    n_jobs : int, optional
        Parallel ingestion workers; default ``n_jobs`` of the trained run.
    export : bool
        Write the subjects' maps under ``OUT_DIR/sub-<label>/anat``.

    Returns
    -------
    AppliedSubjects

    Raises
    ------
    BadInputError
        OUT_DIR is not a fitted run, a participant is unknown, has no runs in the trained space
        or was in the training set, the runs do not fit the trained grid or seeds, bad
        ``refine_steps``; raised before anything is written.
    """
    out_dir = Path(out_dir).expanduser().resolve()
    _check_order(out_dir, Path(bids_dir).expanduser().resolve())
    run = load_fitted_run(out_dir)
    labels = _check_participants(run, participants)
    n_refine = _check_refine_steps(run, refine_steps)
    runs = _find_new_runs(run, Path(bids_dir).expanduser().resolve(), labels)
    work = out_dir / "work" / "apply"
    plan = plan_runs(runs, work, run.settings.ingest, run.settings.qc)  # header and confounds checks; writes nothing
    jobs = run.settings.n_jobs if n_jobs is None else int(n_jobs)
    with torch_threads(run.settings.fit.num_threads):
        with work_lock(work):
            paths = ingest_runs(runs, work, run.settings.ingest, n_jobs=jobs, plan=plan)
            quality = assess_runs(plan.quality, paths, plan.space, run.settings.qc)  # the fit's gates
            if quality.excluded:
                log.warning(quality.summary())
            labels = [label for label in labels if label not in quality.excluded_subjects]
            by_subject: dict[str, list[tuple[Path, Any]]] = {label: [] for label in labels}
            for r, path, row in zip(runs, paths, quality.rows):
                if row.included:
                    by_subject[r.subject].append((path, r))
            stores = {label: subject_fingerprints(label, by_subject[label], work, run.posterior.vertex_index,
                                                  run.seed_index, run.space, run.top_fraction, run.split)
                      for label in labels}
        probs, seconds = {}, {}
        neighbours = None
        for label in tqdm(labels, desc="apply", unit="subject"):
            start = time.perf_counter()
            with FingerprintStore(stores[label]) as store:
                if neighbours is None and float(run.model_state.get("potts_beta") or 0) > 0:
                    neighbours = potts_neighbours(store, torch.device("cpu"))  # the fit's Potts smoothing
                probs[label] = infer_subjects(run.model_state, store, n_refine, neighbours)[0]
            seconds[label] = time.perf_counter() - start
            log.info("sub-%s inferred in %.2f s (%d refinement passes)", label, seconds[label], n_refine)
    posteriors = [write_applied_posterior(run, label, probs[label], stores[label], n_refine) for label in labels]
    result = AppliedSubjects(labels, posteriors, inference_seconds=seconds)
    if export:
        result.maps = export_new_subjects(run, labels)
    return result


# --------------------------------------------------------------------------- validation
def _check_order(out_dir: Path, bids_dir: Path) -> None:
    """``apply BIDS_DIR OUT_DIR`` (the order of ``fit``) instead of ``apply OUT_DIR BIDS_DIR``."""
    if not config_path(out_dir).exists() and config_path(bids_dir).exists():
        raise BadInputError("Arguments in the wrong order", "pavi-parcel apply OUT_DIR BIDS_DIR (the fitted run "
                            "first)", f"the fitted run {bids_dir} second",
                            f"pass OUT_DIR={bids_dir} and BIDS_DIR={out_dir}")


def _check_participants(run: FittedRun, participants: Sequence[str]) -> list[str]:
    labels = list(dict.fromkeys(normalize_label(p, "sub") for p in (participants or [])))
    if not labels or any(not p for p in labels):
        raise BadInputError("No participant to apply the model to", "one or more labels", "none",
                            "pass participant_label=[11,12]")
    trained = set(run.posterior.subjects)
    known = [p for p in labels if p in trained]
    if known:
        shown = ", ".join(f"sub-{p}" for p in known)
        what = f"Participants {shown} were" if len(known) > 1 else f"Participant {shown} was"
        raise BadInputError(f"{what} in the training set of {run.out_dir}",
                            "participants the model was not fitted on", shown,
                            f"drop them: their maps are already in {run.out_dir}/sub-<label>/anat")
    return labels


def _check_refine_steps(run: FittedRun, refine_steps: int | None) -> int:
    value = run.model_state.get("refine_steps", run.settings.fit.refine_steps) if refine_steps is None \
        else refine_steps
    try:
        steps = int(value)
    except (TypeError, ValueError):
        steps = -1
    if steps < 0 or (isinstance(value, float) and value != steps):
        raise BadInputError("Invalid refine_steps", "a whole number >= 0", repr(value), "pass refine_steps=2")
    return steps


def _find_new_runs(run: FittedRun, bids_dir: Path, labels: list[str]) -> list:
    if is_pavi_output(bids_dir):
        raise BadInputError("BIDS_DIR is a pavi-parcel output folder", "an input BIDS dataset", str(bids_dir),
                            "pass the fMRIPrep derivatives folder as BIDS_DIR (argument order: OUT_DIR BIDS_DIR)")
    data = run.settings.data
    runs = find_runs(bids_dir, space=run.space.name if data.space == AUTO else data.space, participants=labels,
                     task=data.task, sessions=list(data.sessions) if data.sessions else None)
    for r in runs:
        if r.space.name != run.space.name:
            raise BadInputError(f"Run {r.key} is not in the space of the fit", f"space-{run.space.name}",
                                f"space-{r.space.name}", "apply the model to runs in the space it was fitted on")
    check_on_grid(runs, run.space)
    return runs


# --------------------------------------------------------------------------- outputs
def write_applied_posterior(run: FittedRun, label: str, probs: np.ndarray, store_path: Path,
                            refine_steps: int) -> Path:
    """Save one new subject's label probabilities (N, K) as ``model/applied/sub-<label>_posterior.h5``."""
    post = run.posterior
    with FingerprintStore(store_path) as store:
        sessions = list(store.sessions)
    attrs = {"method": str(post.attrs.get("method", "unknown")), "applied": True, "refine_steps": int(refine_steps),
             "seed": post.attrs.get("seed", run.settings.seed), "source_posterior": "model/posterior.h5",
             "config_hash": post.attrs.get("config_hash")}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    path = applied_posterior_path(run.out_dir, label)
    write_posterior(path, Posterior(probs[None].astype(np.float32), post.group_probs, post.group_profiles, [label],
                                    sessions, post.vertex_index, post.space, attrs))
    return path


def export_new_subjects(run: FittedRun, labels: list[str]) -> list[Path]:
    """Maps of the new subjects with the run's label table; the whole export when the run has none yet."""
    out, post, export = run.out_dir, run.posterior, run.settings.export
    tsv = label_table_path(out, post.n_networks)
    if not tsv.exists():  # fitted with stop_after=fit: export everything once, training subjects included
        return export_maps(out, None if export.format == "auto" else export.format, export.reference,
                           export.uncertainty)
    table = read_label_table(tsv)
    group = post.space.map_paths(group_maps_folder(out), "", f"seg-pavi{post.n_networks}")
    sidecar = sidecar_path(group["dseg"][0])
    try:
        table.reference = json.loads(sidecar.read_text()).get("Reference")
    except (OSError, ValueError, AttributeError):
        pass
    return export_applied(out, post, table, None, export.uncertainty, labels)
