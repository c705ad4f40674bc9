"""The stage order, and the only module that knows it: ingest -> fingerprints -> fit -> export.

Every stage is resumable on its own (finished runs, fingerprint entries and checkpoints are
reused), so rerunning the same command after a crash or a pre-emption continues where the
previous run stopped. Ingestion and fingerprints live in a work folder that several jobs of
a sweep may share; a file lock makes the first job compute them while the others wait,
then reuse them.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.io.atomic import atomic_write, remove_stale_temporaries
from pavi_parcel.io.layout import fingerprint_store_path, generated_by, is_pavi_output
from pavi_parcel.io.locks import work_lock

log = logging.getLogger(__name__)

STAGES = ("ingest", "fingerprints", "fit", "export")
#: Settings that make an earlier run's results in OUT_DIR incompatible when they change.
IDENTITY_KEYS = ("bids_dir", "participant_label", "seed", "data", "ingest", "fingerprints", "model", "fit.method")


def resolve_dirs(cfg: DictConfig) -> tuple[Path, Path, Path]:
    """Absolute input, output and work folders of a run."""
    bids_dir = Path(str(cfg.bids_dir)).expanduser().resolve()
    out_dir = Path(str(cfg.out_dir)).expanduser().resolve()
    work_dir = Path(str(cfg.work_dir)).expanduser().resolve() if cfg.get("work_dir") else out_dir / "work"
    return bids_dir, out_dir, work_dir




def run(cfg: DictConfig) -> Path:
    """Run the pipeline described by a composed config, stage by stage.

    Every input problem is looked for first (:func:`validate_inputs`) and reported at once,
    before anything is written; then ingestion, fingerprints, a memory plan for the fit
    (:func:`pavi_parcel.inference.resources.plan_fit`), the fit and the export run in turn, each
    resuming from what an interrupted earlier run left.

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
    checked = validate_inputs(cfg)  # before anything is written: bad input leaves no OUT_DIR behind
    fresh_out_dir = not out_dir.exists()
    try:
        if cfg.get("force"):
            clear_results(out_dir)
        save_config(cfg, out_dir / "model" / "config.yaml")
        store_path = _prepare_fingerprints(cfg, checked, work_dir, stop_after)
    except BadInputError:
        if fresh_out_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    if stop_after in ("ingest", "fingerprints"):
        log.info("Stopped after %s; stores are in %s", stop_after, work_dir)
        return out_dir

    from pavi_parcel.inference.resources import plan_fit
    from pavi_parcel.inference.training import fit_model

    fit_cfg = plan_fit(store_path, cfg.model, cfg.fit, device=str(cfg.device))
    fit_model(store_path, out_dir / "model", cfg.model, fit_cfg, seed=int(cfg.seed), device=str(cfg.device))
    if stop_after == "fit":
        return out_dir

    from pavi_parcel.export.maps import export_from_config

    export_from_config(out_dir, cfg.export)
    return out_dir


# --------------------------------------------------------------------------- validation pass
@dataclass
class CheckedInputs:
    """What the validation pass found: the runs and their ingestion plan."""

    runs: list
    plan: Any


def validate_inputs(cfg: DictConfig) -> CheckedInputs:
    """Look for every input problem before any work starts; write nothing.

    Checks, in order: the folders (BIDS_DIR, OUT_DIR, work_dir), an OUT_DIR left by an
    earlier run with other settings, the BIDS discovery (names, pairs, sidecars, TRs), the
    run headers and confounds (:func:`pavi_parcel.ingest.runcheck.plan_runs`), K against the
    vertices available, the disk space the stores and maps will take, and the atlas prior
    (:func:`pavi_parcel.atlas.priors.prior_problems`).

    Raises
    ------
    BadInputErrors
        Every problem found, one line each.
    """
    from pavi_parcel.ingest.runcheck import plan_runs

    bids_dir, out_dir, work_dir = resolve_dirs(cfg)
    errors = folder_problems(bids_dir, out_dir, work_dir)
    writable = not errors
    errors += out_dir_problems(cfg, out_dir)
    runs, plan = [], None
    if bids_dir.is_dir():
        runs = _collect(errors, _find_runs, cfg, bids_dir) or []
    if runs:
        plan = _collect(errors, plan_runs, runs, work_dir, cfg.ingest)
    if plan is not None:
        k = cfg.model.n_networks
        if plan.n_points and k > plan.n_points:
            errors.append(BadInputError(f"model.n_networks={k} is larger than the number of vertices (voxels)",
                                        f"K <= {plan.n_points}", str(k),
                                        f"set model.n_networks to at most {plan.n_points}"))
        if writable:
            errors += _disk_problems(cfg, runs, plan, work_dir, out_dir)
    errors += _prior_problems(cfg, runs)
    if errors:
        raise BadInputErrors(errors)
    return CheckedInputs(runs, plan)


def _prior_problems(cfg: DictConfig, runs: list) -> list[BadInputError]:
    """The atlas prior (``model.prior``): readable, in the runs' space, with K = model.n_networks."""
    from pavi_parcel.atlas.priors import DEFAULT_FLOOR, prior_problems
    from pavi_parcel.ingest.runcheck import MESH_VERTICES

    surface = runs[0].is_surface if runs else None
    n_total = 2 * MESH_VERTICES.get(runs[0].space, 10242) if surface else None
    return prior_problems(cfg.model.get("prior"), int(cfg.model.n_networks), surface, n_total,
                          str(cfg.fit.get("method", "pavi_e")), cfg.model.get("prior_floor", DEFAULT_FLOOR))


def _collect(errors: list[BadInputError], func, *args):
    try:
        return func(*args)
    except BadInputErrors as exc:
        errors.extend(exc.errors)
    except BadInputError as exc:
        errors.append(exc)
    return None


def _disk_problems(cfg: DictConfig, runs: list, plan: Any, work_dir: Path, out_dir: Path) -> list[BadInputError]:
    from pavi_parcel.inference.resources import (
        CohortShape,
        disk_problems,
        estimate_disk,
        estimate_seeds,
    )
    from pavi_parcel.ingest.runcheck import MESH_VERTICES

    surface = runs[0].is_surface
    n_total = 2 * MESH_VERTICES.get(runs[0].space, 10242) if surface else 3 * plan.n_points
    shape = CohortShape(frames=plan.frames, n_points=plan.n_points, n_subjects=len({r.subject for r in runs}),
                        n_sessions=len({r.session or "1" for r in runs}),
                        n_seeds=estimate_seeds(plan.n_points, surface,
                                               spacing_mm=float(cfg.fingerprints.get("seed_spacing_mm", 12.0))),
                        n_networks=int(cfg.model.n_networks), n_total=n_total, surface=surface,
                        method=str(cfg.fit.get("method", "pavi_e")))
    return list(disk_problems(estimate_disk(shape), work_dir, out_dir))


def folder_problems(bids_dir: Path, out_dir: Path, work_dir: Path) -> list[BadInputError]:
    """Problems with the input and output folders (nothing is created)."""
    errors: list[BadInputError] = []
    if not bids_dir.is_dir():
        errors.append(BadInputError("BIDS_DIR does not exist", "a folder holding a BIDS dataset",
                                    f"{bids_dir} ({'a file' if bids_dir.exists() else 'no such folder'})",
                                    "check the path"))
    if out_dir == bids_dir or bids_dir in out_dir.parents:
        errors.append(BadInputError("OUT_DIR is inside BIDS_DIR", "an output folder outside the input dataset",
                                    str(out_dir), "choose an OUT_DIR outside BIDS_DIR (for example BIDS_DIR/../pavi)"))
    if is_pavi_output(bids_dir):
        errors.append(BadInputError("BIDS_DIR is a pavi-parcel output folder", "an input BIDS dataset",
                                    str(bids_dir), "pass the fMRIPrep derivatives folder as BIDS_DIR"))
    for name, folder in (("OUT_DIR", out_dir), ("work_dir", work_dir)):
        if name == "work_dir" and out_dir in work_dir.parents:
            continue  # checked with OUT_DIR
        problem = _unwritable(folder)
        if problem:
            errors.append(BadInputError(f"Cannot write {name} {folder}", "a folder that can be created and written",
                                        problem, f"choose another {name}" + (" or fix its permissions"
                                                                               if "permission" in problem else "")))
    return errors


def _unwritable(folder: Path) -> str | None:
    if folder.exists() and not folder.is_dir():
        return "a file with that name"
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:  # a probe folder, removed at once: os.access says yes to root on read-only places
        os.rmdir(tempfile.mkdtemp(prefix=".pavi-probe-", dir=existing))
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return f"{existing} is on a read-only file system"
        return f"permission denied on {existing}" if exc.errno in (errno.EACCES, errno.EPERM) \
            else f"{existing}: {exc.strerror}"
    return None






def out_dir_problems(cfg: DictConfig, out_dir: Path) -> list[BadInputError]:
    """An OUT_DIR holding another dataset, or an earlier run whose settings differ from these."""
    if not out_dir.is_dir():
        return []
    saved_path = out_dir / "model" / "config.yaml"
    if not saved_path.exists():
        owner = generated_by(out_dir)
        if (owner is not None and owner != "pavi-parcel") or any(out_dir.glob("sub-*")):
            return [BadInputError(f"OUT_DIR {out_dir} holds another dataset",
                                  "a new or empty folder, or one written by pavi-parcel",
                                  f"a dataset generated by {owner}" if owner else "sub-* folders",
                                  "choose a new OUT_DIR")]
        return []
    if cfg.get("force"):
        return []
    try:
        saved = yaml.safe_load(saved_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        saved = {}
    current = OmegaConf.to_container(cfg, resolve=True)
    before, after = _leaves(saved), _leaves(current)
    changed = [f"{key} {_show(before.get(key))} -> {_show(after.get(key))}" for key in sorted(set(before) | set(after))
               if _normal(key, before.get(key)) != _normal(key, after.get(key))]
    if not changed:
        return []
    listing = "; ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    return [BadInputError(f"OUT_DIR {out_dir} holds results made with other settings",
                          "the settings of the earlier run (to resume it)", listing,
                          "choose a new OUT_DIR, or add force=true to replace the earlier results")]


def _leaves(cfg: Any) -> dict[str, Any]:
    """The identity settings of a config as ``{dotted.key: value}``."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        else:
            out[prefix] = value

    for key in IDENTITY_KEYS:
        value = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        walk(key, value)
    return out


def _normal(key: str, value: Any) -> Any:
    if key == "participant_label":
        return sorted(str(v)[4:] if str(v).startswith("sub-") else str(v) for v in value or [])
    if key == "bids_dir" and value is not None:
        return str(Path(str(value)).expanduser().resolve())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return json.dumps(value, sort_keys=True, default=str)


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def clear_results(out_dir: Path) -> None:
    """Remove the results of an earlier run from OUT_DIR (``force=true``); keep the work/ caches."""
    if not out_dir.is_dir() or (not (out_dir / "model").exists() and generated_by(out_dir) != "pavi-parcel"):
        return
    shutil.rmtree(out_dir / "model", ignore_errors=True)
    for path in [*out_dir.glob("sub-*"), *out_dir.glob("hemi-*"), *out_dir.glob("space-*"),
                 *out_dir.glob("seg-pavi*"), out_dir / "report.html", out_dir / "dataset_description.json"]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


def _find_runs(cfg: DictConfig, bids_dir: Path) -> list:
    from pavi_parcel.bids.discovery import find_runs

    sessions = cfg.data.get("sessions")
    return find_runs(bids_dir, space=str(cfg.data.space),
                     participants=[str(p) for p in cfg.get("participant_label") or []],
                     task=cfg.data.get("task"), sessions=list(sessions) if sessions else None)


def _prepare_fingerprints(cfg: DictConfig, checked: CheckedInputs, work_dir: Path, stop_after: str | None) -> Path:
    """Ingest and fingerprint the cohort once per work folder, under a file lock."""
    from pavi_parcel.fingerprints.compute import compute_fingerprints
    from pavi_parcel.ingest.cleaning import ingest_runs

    store_path = fingerprint_store_path(work_dir)
    with work_lock(work_dir):
        remove_stale_temporaries(work_dir)
        paths = ingest_runs(checked.runs, work_dir, cfg.ingest, n_jobs=int(cfg.n_jobs), plan=checked.plan)
        if stop_after == "ingest":
            return store_path
        compute_fingerprints(paths, store_path, cfg.fingerprints)
    return store_path




def save_config(cfg: DictConfig, path: Path) -> None:
    """Save the resolved config next to the results (atomically), with absolute folders."""
    bids_dir, out_dir, _ = resolve_dirs(cfg)
    data = OmegaConf.to_container(cfg, resolve=True)
    data.update(bids_dir=str(bids_dir), out_dir=str(out_dir))
    text = OmegaConf.to_yaml(OmegaConf.create(data))
    with atomic_write(path) as tmp:
        tmp.write_text(text)
