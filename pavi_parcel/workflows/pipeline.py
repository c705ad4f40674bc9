"""The stage order, and the only module that knows it: ingest -> quality gates -> fingerprints -> fit -> export
-> connectome -> report.

Every stage is resumable on its own (finished runs, fingerprint entries and checkpoints are
reused), so rerunning the same command after a crash or a pre-emption continues where the
previous run stopped. Ingestion and fingerprints live in a work folder that several jobs of
a sweep may share; a file lock makes the first job compute them while the others wait,
then reuse them.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pavi_parcel.connectome.stage import connectome_stage
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.export.report import build_report
from pavi_parcel.export.stage import export_stage
from pavi_parcel.fingerprints.compute import compute_fingerprints
from pavi_parcel.inference.resources import plan_fit
from pavi_parcel.inference.training import fit_model
from pavi_parcel.ingest.cleaning import ingest_runs
from pavi_parcel.ingest.quality import assess_runs, write_qc_table
from pavi_parcel.io.atomic import atomic_write, remove_stale_temporaries
from pavi_parcel.io.layout import config_path, fingerprint_store_path, qc_table_path
from pavi_parcel.io.locks import work_lock
from pavi_parcel.settings.compose import to_yaml
from pavi_parcel.settings.schema import RunSettings

from .preflight import CheckedInputs, clear_results, validate_inputs

log = logging.getLogger(__name__)


def run(settings: RunSettings) -> Path:
    """Run the pipeline, stage by stage.

    Every input problem is looked for first (:func:`.preflight.validate_inputs`) and reported at
    once, before anything is written; then ingestion, fingerprints, a memory plan for the fit
    (:func:`pavi_parcel.inference.resources.plan_fit`), the fit, the export of the maps, the
    connectomes (``connectome.enabled``) and the report run in turn, each resuming from what an
    interrupted earlier run left.

    Parameters
    ----------
    settings : RunSettings
        The settings of the run (:func:`pavi_parcel.settings.compose.compose`).

    Returns
    -------
    Path
        OUT_DIR, holding the maps, ``model/`` and ``work/``.
    """
    out_dir, work_dir, stop_after = settings.out_dir, settings.work_folder, settings.stop_after
    checked = validate_inputs(settings)  # before anything is written: bad input leaves no OUT_DIR behind
    if checked.plan is not None:
        for note in checked.plan.space.notes():
            log.info(note)
    fresh_out_dir = not out_dir.exists()
    try:
        if settings.force:
            clear_results(out_dir)
        save_settings(settings, config_path(out_dir))
        store_path = _prepare_fingerprints(settings, checked)
    except BadInputError:
        if fresh_out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if stop_after in ("ingest", "fingerprints"):
        log.info("Stopped after %s; stores are in %s", stop_after, work_dir)
        return out_dir
    fit = plan_fit(store_path, settings.model, settings.fit, device=settings.device)
    fit_model(store_path, out_dir / "model", settings.model, fit, seed=settings.seed, device=settings.device)
    if stop_after == "fit":
        return out_dir
    publish(out_dir, settings)
    return out_dir


def publish(out_dir: Path, settings: RunSettings) -> None:
    """What follows a fit: the maps, the connectomes (``connectome.enabled``, not with ``stop_after=export``),
    then the report (``export.report``), which shows both."""
    export_stage(out_dir, settings.export)
    if settings.connectome.enabled and settings.stop_after != "export":
        connectome_stage(out_dir, settings.connectome)
    if settings.export.report:
        build_report(out_dir)


def _prepare_fingerprints(settings: RunSettings, checked: CheckedInputs) -> Path:
    """Ingest and fingerprint the cohort once per work folder, under a file lock."""
    work_dir = settings.work_folder
    store_path = fingerprint_store_path(work_dir)
    with work_lock(work_dir):
        remove_stale_temporaries(work_dir)
        plan = checked.plan
        paths = ingest_runs(checked.runs, work_dir, settings.ingest, n_jobs=settings.n_jobs, plan=plan)
        quality = assess_runs(plan.quality, paths, plan.space, settings.qc)
        write_qc_table(quality, qc_table_path(settings.out_dir))
        (log.warning if quality.excluded else log.info)("%s (table: %s)", quality.summary(),
                                                        qc_table_path(settings.out_dir))
        if settings.stop_after == "ingest":
            return store_path
        compute_fingerprints(quality.kept_paths, store_path, settings.fingerprints)
    return store_path


def save_settings(settings: RunSettings, path: Path) -> None:
    """Save the resolved settings next to the results (atomically), with absolute folders."""
    with atomic_write(path) as tmp:
        tmp.write_text(to_yaml(settings))


__all__ = ["publish", "run", "save_settings"]
