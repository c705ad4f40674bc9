"""The stage order, and the only module that knows it: ingest -> fingerprints -> fit -> export.

Every stage is resumable on its own (finished runs, fingerprint entries and checkpoints are
reused), so rerunning the same command after a crash or a pre-emption continues where the
previous run stopped. Ingestion and fingerprints live in a work folder that several jobs of
a sweep may share; a file lock makes the first job compute them while the others wait,
then reuse them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from .atomic import atomic_write, remove_stale_temporaries
from .exceptions import BadInputError

log = logging.getLogger(__name__)

STAGES = ("ingest", "fingerprints", "fit", "export")


def resolve_dirs(cfg: DictConfig) -> tuple[Path, Path, Path]:
    """Absolute input, output and work folders of a run."""
    bids_dir = Path(str(cfg.bids_dir)).expanduser().resolve()
    out_dir = Path(str(cfg.out_dir)).expanduser().resolve()
    work_dir = Path(str(cfg.work_dir)).expanduser().resolve() if cfg.get("work_dir") else out_dir / "work"
    return bids_dir, out_dir, work_dir


def fingerprint_store_path(work_dir: Path) -> Path:
    """Where the fingerprint store of a work folder lives."""
    return work_dir / "fingerprints.h5"


def run(cfg: DictConfig) -> Path:
    """Run the pipeline described by a composed config, stage by stage.

    Parameters
    ----------
    cfg : DictConfig
        The composed configuration (``conf/config.yaml`` plus overrides).

    Returns
    -------
    Path
        OUT_DIR, holding the maps, ``model/`` and ``work/``.
    """
    stop_after = cfg.get("stop_after")
    if stop_after is not None and stop_after not in STAGES:
        raise BadInputError("Invalid stop_after", f"one of {', '.join(STAGES)}", repr(stop_after),
                            "use --stop-after fingerprints (or fit)")
    bids_dir, out_dir, work_dir = resolve_dirs(cfg)
    _check_folders(bids_dir, out_dir)
    runs = _find_runs(cfg, bids_dir)  # before anything is written: bad input leaves no OUT_DIR behind
    fresh_out_dir = not out_dir.exists()
    try:
        save_config(cfg, out_dir / "model" / "config.yaml")
        store_path = _prepare_fingerprints(cfg, runs, work_dir, stop_after)
    except BadInputError:
        if fresh_out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if stop_after in ("ingest", "fingerprints"):
        log.info("Stopped after %s; stores are in %s", stop_after, work_dir)
        return out_dir

    from .fit import fit_model

    fit_model(store_path, out_dir / "model", cfg.model, cfg.fit, seed=int(cfg.seed),
              device=str(cfg.device))
    if stop_after == "fit":
        return out_dir

    from .export import export_from_config

    export_from_config(out_dir, cfg.export)
    return out_dir


def _find_runs(cfg: DictConfig, bids_dir: Path) -> list:
    from .bids import find_runs

    sessions = cfg.data.get("sessions")
    return find_runs(bids_dir, space=str(cfg.data.space),
                     participants=[str(p) for p in cfg.get("participant_label") or []],
                     task=cfg.data.get("task"), sessions=list(sessions) if sessions else None)


def _prepare_fingerprints(cfg: DictConfig, runs: list, work_dir: Path, stop_after: str | None) -> Path:
    """Ingest and fingerprint the cohort once per work folder, under a file lock."""
    from .fingerprints import compute_fingerprints
    from .ingest import ingest_runs

    store_path = fingerprint_store_path(work_dir)
    with work_lock(work_dir):
        remove_stale_temporaries(work_dir)
        paths = ingest_runs(runs, work_dir, cfg.ingest, n_jobs=int(cfg.n_jobs))
        if stop_after == "ingest":
            return store_path
        compute_fingerprints(paths, store_path, cfg.fingerprints)
    return store_path


@contextlib.contextmanager
def work_lock(work_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``work_dir`` (blocks while another job holds it)."""
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        handle = open(work_dir / ".lock", "a+")
    except PermissionError as exc:
        raise BadInputError(f"Cannot write to {work_dir}", "a writable output folder",
                            "permission denied", "choose another OUT_DIR or fix its permissions") from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_config(cfg: DictConfig, path: Path) -> None:
    """Save the resolved config next to the results (atomically)."""
    text = OmegaConf.to_yaml(cfg, resolve=True)
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def _check_folders(bids_dir: Path, out_dir: Path) -> None:
    if not bids_dir.is_dir():
        raise BadInputError("BIDS_DIR does not exist", "a folder holding a BIDS dataset",
                            str(bids_dir), "check the path")
    if out_dir == bids_dir or bids_dir in out_dir.parents:
        raise BadInputError("OUT_DIR is inside BIDS_DIR", "an output folder outside the input dataset",
                            str(out_dir), "choose an OUT_DIR outside BIDS_DIR (for example BIDS_DIR/../pavi)")
    if (bids_dir / "model" / "posterior.h5").exists() or (bids_dir / "work" / "fingerprints.h5").exists():
        raise BadInputError("BIDS_DIR is a pavi-parcel output folder", "an input BIDS dataset",
                            str(bids_dir), "pass the fMRIPrep derivatives folder as BIDS_DIR")
    if out_dir.exists() and not os.access(out_dir, os.W_OK):
        raise BadInputError(f"Cannot write to {out_dir}", "a writable output folder",
                            "permission denied", "choose another OUT_DIR or fix its permissions")
