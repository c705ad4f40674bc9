"""The validation pass of a fit: every input problem, found before anything is written.

:func:`validate_inputs` looks at the folders, an OUT_DIR left by an earlier run, the BIDS
discovery, the run headers and confounds, K against the vertices available, the disk space the
stores and maps will take and the atlas prior, and reports every problem at once, so that a
bad input leaves no half-written OUT_DIR behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pavi_parcel.atlas.priors import prior_problems
from pavi_parcel.bids.discovery import BoldRun, find_runs
from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.inference.resources import CohortShape, disk_problems, estimate_disk
from pavi_parcel.ingest.runcheck import IngestPlan, plan_runs
from pavi_parcel.io.layout import config_path, generated_by, is_pavi_output
from pavi_parcel.settings.compose import load_settings
from pavi_parcel.settings.schema import RunSettings

#: Settings that make an earlier run's results in OUT_DIR incompatible when they change.
IDENTITY_KEYS = ("bids_dir", "participant_label", "seed", "data", "ingest", "qc", "fingerprints", "model", "fit.method")


@dataclass
class CheckedInputs:
    """What the validation pass found: the runs and their ingestion plan."""

    runs: list[BoldRun]
    plan: IngestPlan | None


def validate_inputs(settings: RunSettings) -> CheckedInputs:
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
    bids_dir, out_dir, work_dir = settings.bids_dir, settings.out_dir, settings.work_folder
    errors = folder_problems(bids_dir, out_dir, work_dir)
    writable = not errors
    errors += out_dir_problems(settings)
    runs, plan = [], None
    if bids_dir.is_dir():
        runs = _collect(errors, find_settings_runs, settings) or []
    if runs:
        plan = _collect(errors, plan_runs, runs, work_dir, settings.ingest, settings.qc)
    if plan is not None:
        k = settings.model.n_networks
        if plan.n_points and k > plan.n_points:
            errors.append(BadInputError(f"model.n_networks={k} is larger than the number of vertices (voxels)",
                                        f"K <= {plan.n_points}", str(k),
                                        f"set model.n_networks to at most {plan.n_points}"))
        if writable:
            errors += _disk_problems(settings, runs, plan)
    errors += _prior_problems(settings, plan)
    if errors:
        raise BadInputErrors(errors)
    return CheckedInputs(runs, plan)


def find_settings_runs(settings: RunSettings) -> list[BoldRun]:
    """The runs ``data.*`` and ``participant_label`` select in BIDS_DIR."""
    data = settings.data
    return find_runs(settings.bids_dir, space=data.space, participants=list(settings.participant_label),
                     task=data.task, sessions=list(data.sessions) if data.sessions else None,
                     mesh_dir=data.mesh_dir)


def _prior_problems(settings: RunSettings, plan: IngestPlan | None) -> list[BadInputError]:
    """The atlas prior (``model.prior``): readable, in the runs' space, with K = model.n_networks."""
    model = settings.model
    space = None if plan is None else plan.space
    return prior_problems(model.prior, model.n_networks, space, settings.fit.method, model.prior_floor)


def _collect(errors: list[BadInputError], func, *args):
    try:
        return func(*args)
    except BadInputErrors as exc:
        errors.extend(exc.errors)
    except BadInputError as exc:
        errors.append(exc)
    return None


def _disk_problems(settings: RunSettings, runs: list[BoldRun], plan: IngestPlan) -> list[BadInputError]:
    space = plan.space
    shape = CohortShape(frames=plan.frames, n_points=plan.n_points, n_subjects=len({r.subject for r in runs}),
                        n_sessions=len({r.session or "1" for r in runs}),
                        n_seeds=space.estimate_seeds(plan.n_points, settings.fingerprints.seed_spacing_mm),
                        n_networks=settings.model.n_networks, n_total=space.n_total, method=settings.fit.method)
    return list(disk_problems(estimate_disk(shape), settings.work_folder, settings.out_dir))


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


def out_dir_problems(settings: RunSettings) -> list[BadInputError]:
    """An OUT_DIR holding another dataset, or an earlier run whose settings differ from these."""
    out_dir = settings.out_dir
    if not out_dir.is_dir():
        return []
    saved_path = config_path(out_dir)
    if not saved_path.exists():
        owner = generated_by(out_dir)
        if (owner is not None and owner != "pavi-parcel") or any(out_dir.glob("sub-*")):
            return [BadInputError(f"OUT_DIR {out_dir} holds another dataset",
                                  "a new or empty folder, or one written by pavi-parcel",
                                  f"a dataset generated by {owner}" if owner else "sub-* folders",
                                  "choose a new OUT_DIR")]
        return []
    if settings.force:
        return []
    try:
        saved = load_settings(saved_path).to_dict()
    except BadInputError:
        saved = {}
    before, after = _leaves(saved), _leaves(settings.to_dict())
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
                 *out_dir.glob("seg-pavi*"), out_dir / "group", out_dir / "qc", out_dir / "report.html",
                 out_dir / "README.md", out_dir / "dataset_description.json"]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()


__all__ = ["CheckedInputs", "IDENTITY_KEYS", "clear_results", "find_settings_runs", "folder_problems",
           "out_dir_problems", "validate_inputs"]
