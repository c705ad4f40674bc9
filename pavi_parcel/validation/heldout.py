"""Validation on held-out runs: ``pavi-parcel validate OUT_DIR --heldout BIDS_DIR``.

The held-out dataset holds other runs or sessions of the fitted participants (training ones,
or ones added by ``pavi-parcel apply``). Its runs go through the fitted run's ingest settings
and get fingerprints on the fitted vertices and seeds, exactly as ``apply`` does for new
subjects (:func:`pavi_parcel.ingest.ingest_runs`,
:func:`pavi_parcel.fingerprints.new_subjects.subject_fingerprints`); runs whose inputs were used for
fitting (same files, same settings) are skipped. Caches go to ``OUT_DIR/work/validate/``.
Each subject's fitted map, and the group atlas, are then scored on the held-out data:

* ``homogeneity``, ``group_homogeneity``: resting-state homogeneity (Schaefer et al. 2018,
  Kong et al. 2019, :func:`pavi_parcel.metrics.scores.homogeneity`) of the hard maps on each held-out
  run's cleaned time series, averaged over the subject's runs;
* the held-out log-likelihood columns of :func:`pavi_parcel.validation.sessions.loglik_scores`
  on each held-out session's fingerprints, averaged over the subject's sessions
  (``loglik_data`` = ``heldout-runs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pavi_parcel.bids.discovery import AUTO, BoldRun, dataset_roots, find_runs
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.fingerprints.new_subjects import subject_fingerprints
from pavi_parcel.inference.fitted_run import FittedRun, load_fitted_run, training_store
from pavi_parcel.ingest.cleaning import ingest_runs
from pavi_parcel.ingest.runcheck import check_on_grid, plan_runs, run_fingerprint
from pavi_parcel.io.layout import is_pavi_output
from pavi_parcel.io.locks import work_lock
from pavi_parcel.metrics.scores import homogeneity
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.timeseries import read_run_timeseries

from .maps import SubjectMaps, load_trained_vmf
from .sessions import LOGLIK_COLUMNS, loglik_scores

log = logging.getLogger(__name__)


@dataclass
class HeldoutPlan:
    """Checked held-out inputs (:func:`plan_heldout`); nothing written yet.

    Attributes
    ----------
    run : FittedRun
        From :func:`pavi_parcel.inference.fitted_run.load_fitted_run`.
    runs : list of BoldRun
        Held-out runs of fitted or applied participants, not used for fitting.
    ingest : IngestPlan
        :func:`pavi_parcel.ingest.plan_runs` of those runs into ``OUT_DIR/work/validate``.
    """

    run: Any
    runs: list
    ingest: Any

    @property
    def work(self) -> Path:
        return self.run.out_dir / "work" / "validate"


def plan_heldout(out_dir: Path, heldout_dir: Path, maps: SubjectMaps) -> HeldoutPlan:
    """Every cheap check of ``--heldout`` (fitted run, participants, runs, headers, confounds), first.

    Raises
    ------
    BadInputError
        Not a fitted run; no held-out runs of a fitted participant in the space of the fit;
        every run found was used for fitting; runs on another grid; bad confounds.
    """
    run = load_fitted_run(Path(out_dir).expanduser().resolve())
    runs = heldout_runs(run, Path(heldout_dir).expanduser().resolve(), maps)
    return HeldoutPlan(run, runs, plan_runs(runs, run.out_dir / "work" / "validate", run.settings.ingest,
                                                    run.settings.qc))


def heldout_metrics(plan: HeldoutPlan, maps: SubjectMaps, n_jobs: int | None = None) -> pd.DataFrame:
    """Homogeneity and log-likelihood of every subject's map and of the group atlas on held-out runs.

    Parameters
    ----------
    plan : HeldoutPlan
        From :func:`plan_heldout`.
    maps : SubjectMaps
    n_jobs : int, optional
        Parallel ingestion workers; default ``n_jobs`` of the fitted run.

    Returns
    -------
    DataFrame
        One row per subject with held-out runs: ``homogeneity``, ``group_homogeneity``, the
        :data:`~pavi_parcel.validation.sessions.LOGLIK_COLUMNS` and ``loglik_data``.

    Raises
    ------
    BadInputError
        Runs whose data are unreadable or cover too few of the fitted vertices or seeds.
    """
    run = plan.run
    vmf = load_trained_vmf(run.out_dir)
    jobs = run.settings.n_jobs if n_jobs is None else int(n_jobs)
    with work_lock(plan.work):
        paths = ingest_runs(plan.runs, plan.work, run.settings.ingest, n_jobs=jobs, plan=plan.ingest)
        by_subject: dict[str, list[tuple[Path, Any]]] = {}
        for r, path in zip(plan.runs, paths):
            if path is not None:  # None: the run failed the frames or motion gate
                by_subject.setdefault(r.subject, []).append((path, r))
        stores = {label: subject_fingerprints(label, items, plan.work, run.posterior.vertex_index, run.seed_index,
                                              run.space, run.top_fraction) for label, items in by_subject.items()}
    post = maps.posterior
    group_hard = post.group_probs.argmax(axis=1)
    rows = []
    for label, items in by_subject.items():
        probs = maps.probs(label)
        hard = probs.argmax(axis=1)
        homog = []
        for path, _ in items:
            series = read_run_timeseries(path)
            _, in_model, in_run = np.intersect1d(post.vertex_index, series.vertex_index, return_indices=True)
            data = series.data[:, in_run]
            homog.append((homogeneity(hard[in_model], data), homogeneity(group_hard[in_model], data)))
        with FingerprintStore(stores[label]) as store:
            x = store.read(0)
        scores = [loglik_scores(vmf, x[t], probs, post.group_probs) for t in range(x.shape[0]) if np.any(x[t])]
        rows.append({"subject": label, "homogeneity": float(np.mean([h[0] for h in homog])),
                     "group_homogeneity": float(np.mean([h[1] for h in homog])),
                     **{c: float(np.nanmean([s[c] for s in scores])) if scores else np.nan for c in LOGLIK_COLUMNS},
                     "loglik_data": "heldout-runs"})
    return pd.DataFrame(rows)


def heldout_runs(run: FittedRun, heldout_dir: Path, maps: SubjectMaps) -> list[BoldRun]:
    """The held-out dataset's runs of fitted or applied participants that were not used for fitting.

    Parameters
    ----------
    run : FittedRun
        From :func:`pavi_parcel.inference.fitted_run.load_fitted_run`.
    heldout_dir : Path
    maps : SubjectMaps

    Returns
    -------
    list of BoldRun
        In the space and task of the fit, any session.
    """
    if not heldout_dir.is_dir():
        raise BadInputError(f"heldout_dir {heldout_dir} does not exist", "a folder holding a BIDS dataset",
                            "no such folder" if not heldout_dir.exists() else "a file", "check the path")
    if is_pavi_output(heldout_dir):
        raise BadInputError("heldout_dir is a pavi-parcel output folder", "an input BIDS dataset", str(heldout_dir),
                            "pass the fMRIPrep derivatives folder holding the held-out runs")
    roots = dataset_roots(heldout_dir)
    found = sorted({p.name[4:] for root in roots for p in root.glob("sub-*") if p.is_dir()})
    wanted = [label for label in maps.labels if label in found]
    if not wanted:
        shown = ", ".join(f"sub-{p}" for p in found[:5]) + (" ..." if len(found) > 5 else "")
        raise BadInputError(f"No held-out data of the fitted participants in {heldout_dir}",
                            "sub-<label> folders of participants in the fit or added by `pavi-parcel apply` "
                            f"({', '.join(f'sub-{p}' for p in maps.labels[:3])} ...)", shown or "no sub-* folders",
                            "pass a BIDS dataset with other runs or sessions of the same participants")
    data = run.settings.data
    runs = find_runs(heldout_dir, space=run.space.name if data.space == AUTO else data.space, participants=wanted,
                     task=data.task)
    for r in runs:
        if r.space.name != run.space.name:
            raise BadInputError(f"Run {r.key} is not in the space of the fit", f"space-{run.space.name}",
                                f"space-{r.space.name}", "pass held-out runs in the space the model was fitted on")
    check_on_grid(runs, run.space)
    used = _training_run_hashes(run, maps)
    fresh = [r for r in runs if run_fingerprint(r, run.settings.ingest) not in used]
    if len(fresh) < len(runs):
        log.info("Skipping %d held-out run(s) used for fitting", len(runs) - len(fresh))
    if not fresh:
        raise BadInputError(f"Every run of the fitted participants in {heldout_dir} was used for fitting",
                            "runs the model did not see (other sessions or runs)",
                            f"{len(runs)} training run(s)", "pass a dataset with other runs, or fit on a subset "
                            "of the sessions (data.sessions=[...]) and validate on the rest")
    return fresh


def _training_run_hashes(run: FittedRun, maps: SubjectMaps) -> set[str]:
    """Ingest hashes of every run behind the training store and the applied subjects' stores."""
    paths = [training_store(run.settings, run.out_dir)]
    paths += [run.out_dir / "work" / "apply" / f"sub-{label}_fingerprints.h5" for label in maps.applied]
    used: set[str] = set()
    for path in paths:
        if path.is_file():
            with FingerprintStore(path) as store:
                settings = store.settings if isinstance(store.settings, dict) else {}
                used.update(str(h) for h in settings.get("runs", []))
    if not Path(paths[0]).is_file():
        log.warning("The training fingerprint store is gone: held-out runs cannot be checked against the "
                    "training runs")
    return used
