"""Find the BOLD runs of a BIDS dataset: fMRIPrep, HCP-style and XCP-D outputs in any space, old and new names.

A *run* is one acquisition of one subject (``sub``, ``ses``, ``task``, ``run`` entities): its
files in one space (two hemisphere GIFTIs, one CIFTI dense time series, or a NIfTI and its brain
mask), its fMRIPrep confounds table and its repetition time. :func:`find_runs` checks everything
that is cheap to check (names, pairs, sidecars, headers) and reports every problem at once.

Names understood (:func:`pavi_parcel.spaces.registry.bold_file`)::

    sub-01[_ses-1]_task-rest[_run-1]_hemi-L_space-fsaverage5_bold.func.gii      fMRIPrep >= 21
    sub-01[_ses-1]_task-rest[_run-1]_space-fsaverage5_hemi-L.func.gii           older fMRIPrep
    sub-01[_ses-1]_task-rest[_run-1]_space-fsaverage_den-10k_bold.func.gii      den alias of fsaverage5
    sub-01[_ses-1]_task-rest[_run-1]_space-fsLR_den-91k_bold.dtseries.nii       fMRIPrep --cifti-output
    sub-01[_ses-1]_task-rest[_run-1]_space-fsLR_den-91k_desc-denoised_bold.dtseries.nii   XCP-D
    sub-01[_ses-1]_task-rest[_run-1]_space-MNI152NLin2009cAsym[_res-2]_desc-preproc_bold.nii.gz
        + ..._desc-brain_mask.nii.gz
    sub-01[_ses-1]_task-rest[_run-1]_desc-confounds_timeseries.tsv               (older: _regressors.tsv)

``data.space=auto`` (the default) takes the one space the dataset has runs in; a dataset with
runs in several spaces (fMRIPrep writes several) must name one. Repetition times are read and
cross-checked by :mod:`pavi_parcel.bids.sidecars`.

``BIDS_DIR`` may be the fMRIPrep folder itself or a raw dataset holding it under
``derivatives/fmriprep*``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.spaces import Space, space_named

from .entities import normalize_label
from .run import BoldRun
from .scan import RunFinder, check_found, func_folders, sort_key

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"^[A-Za-z0-9]+$")
AUTO = "auto"
"""``data.space`` value that takes the one space the dataset has runs in."""


def find_runs(bids_dir: Path, space: str = AUTO, participants: Sequence[str] = (), task: str | None = None,
              sessions: Sequence[str] | None = None, mesh_dir: str | Path | None = None) -> list[BoldRun]:
    """Find every preprocessed BOLD run of the requested space.

    Parameters
    ----------
    bids_dir : Path
        fMRIPrep derivatives folder, or a raw BIDS dataset with ``derivatives/fmriprep*``.
    space : str
        ``auto`` (the one space with runs), ``fsaverage5`` (any ``fsaverage*``), ``fsLR``
        (CIFTI) or a volume template such as ``MNI152NLin2009cAsym``;
        ``MNI152NLin2009cAsym:res-2`` picks one resolution.
    participants : sequence of str
        Labels with or without ``sub-``; empty for every participant.
    task : str or None
        Task label; None for every task.
    sessions : sequence of str or None
        Session labels with or without ``ses-``; None for every session.
    mesh_dir : str or Path, optional
        Where to look first for a surface space's mesh (``data.mesh_dir``).

    Returns
    -------
    list of BoldRun
        Sorted by subject, session, task and run.

    Raises
    ------
    BadInputError
        Missing or non-BIDS folder, unknown participants, no runs, runs in several spaces
        with ``auto``, formats mixed in one cohort; several problems (a missing hemisphere,
        mask or repetition time, conflicting TRs) are reported together as
        :class:`BadInputErrors`.
    """
    bids_dir = Path(bids_dir).expanduser()
    _check_dataset(bids_dir)
    space_name, qualifiers = _parse_space(space)
    roots = dataset_roots(bids_dir)
    available = sorted({p.name[4:] for r in roots for p in r.glob("sub-*") if p.is_dir()})
    participants = [participants] if isinstance(participants, str) else list(participants or ())
    sessions = [sessions] if isinstance(sessions, str) else sessions
    wanted = _select_participants(participants, available, bids_dir)
    wanted_sessions = None if sessions is None else {normalize_label(s, "ses") for s in sessions}
    task = normalize_label(task, "task") if task else None

    finder = RunFinder(bids_dir, qualifiers, task, wanted_sessions)
    for root in roots:
        for subject in wanted:
            for folder in func_folders(root / f"sub-{subject}"):
                finder.scan(folder, root)
    chosen = finder.choose(space_name, bids_dir)
    target = space_named(chosen, mesh_dir) if chosen else None
    runs, errors = [], list(finder.errors_for(target))
    if target is not None:
        finder.check_one_format(target, wanted)
        for ident, files in sorted(finder.groups(target).items(), key=lambda kv: sort_key(dict(kv[0]))):
            try:
                runs.append(finder.make_run(target, dict(ident), files))
            except BadInputError as exc:
                errors.append(exc)
    keys: dict[str, BoldRun] = {}
    for run in runs:
        if run.key in keys:
            errors.append(BadInputError(
                f"Two runs share the name {run.key}", "one run per subject, session, task and run",
                f"{keys[run.key].bold[0].name} and {run.bold[0].name}",
                "keep one of them or filter with participant_label/data.task (acq-, rec-, dir- are not told apart)"))
        keys.setdefault(run.key, run)
    if errors:
        raise BadInputErrors(errors)
    requested = wanted if participants else []
    check_found(runs, requested, finder, bids_dir, target, space_name,
                _with_runs(roots, sorted(set(available) - set(wanted)), finder, target)
                if requested and {r.subject for r in runs} != set(requested) else ())
    skipped = sorted(set(wanted) - {r.subject for r in runs})
    if skipped:
        logger.warning("%d participant(s) without %s runs are left out: %s", len(skipped), target.name,
                       ", ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
    if space_name is None:
        logger.info("data.space=auto: using space-%s, the only space with runs", target.name)
    return runs


# --------------------------------------------------------------------------- discovery internals
def _with_runs(roots: list[Path], subjects: list[str], finder: RunFinder, space: Space | None) -> list[str]:
    """Which of ``subjects`` have runs in ``space`` with the same filters (names only; for messages)."""
    if space is None:
        return []
    other = RunFinder(finder.bids_dir, finder.qualifiers, finder.task, finder.sessions)
    for root in roots:
        for subject in subjects:
            for folder in func_folders(root / f"sub-{subject}"):
                other.scan(folder, root)
    return sorted(other.subjects.get((space.name, space.file_kind), set()))


def _check_dataset(bids_dir: Path) -> None:
    if not bids_dir.is_dir():
        raise BadInputError(f"BIDS_DIR {bids_dir} does not exist", "a folder holding a BIDS dataset",
                            "no such folder" if not bids_dir.exists() else "a file", "check the path")
    if not (bids_dir / "dataset_description.json").is_file() and not any(bids_dir.glob("sub-*")):
        raise BadInputError(f"{bids_dir} is not a BIDS dataset",
                            "a dataset_description.json or sub-* folders", "neither",
                            "pass the fMRIPrep output folder (or the raw dataset holding derivatives/fmriprep)")


def _parse_space(space: str) -> tuple[str | None, dict[str, str]]:
    """``(name, qualifiers)`` of a ``data.space`` value; name None for ``auto``."""
    name, _, rest = str(space).strip().partition(":")
    qualifiers = dict(q.split("-", 1) for q in rest.split(":") if "-" in q) if rest else {}
    if not name or not _LABEL.match(name):
        raise BadInputError(f"Invalid space {space!r}", "auto or a space label such as fsaverage5, fsLR or "
                            "MNI152NLin2009cAsym[:res-2]", repr(space), "check data.space")
    if name == AUTO:
        return None, qualifiers
    space_named(name)  # an fs* name that is no known mesh is refused here
    return name, qualifiers


def dataset_roots(bids_dir: Path) -> list[Path]:
    derivatives = bids_dir / "derivatives"
    extra = sorted(p for p in derivatives.glob("fmriprep*") if p.is_dir()) if derivatives.is_dir() else []
    return [bids_dir] + extra


def _select_participants(participants: Sequence[str], available: list[str], bids_dir: Path) -> list[str]:
    if not participants:
        return available
    wanted = list(dict.fromkeys(normalize_label(p, "sub") for p in participants))
    unknown = [p for p in wanted if p not in available]
    if unknown:
        listing = ", ".join(available[:20]) + (f" ... ({len(available)} in all)" if len(available) > 20 else "")
        raise BadInputError(f"Unknown participant {', '.join(repr(u) for u in unknown)} in {bids_dir}",
                            f"one of the available participants: {listing or 'none'}",
                            ", ".join(unknown), "check participant_label")
    return wanted


__all__ = ["AUTO", "BoldRun", "dataset_roots", "find_runs"]
