"""Find the BOLD runs of a BIDS dataset: fMRIPrep surface and volume outputs, old and new names.

A *run* is one acquisition of one subject (``sub``, ``ses``, ``task``, ``run`` entities):
its two hemisphere GIFTIs (surfaces) or its NIfTI and brain mask (volumes), its fMRIPrep
confounds table and its repetition time. :func:`find_runs` checks everything that is cheap
to check (names, pairs, sidecars, headers) and reports every problem at once.

Names understood::

    sub-01[_ses-1]_task-rest[_run-1]_hemi-L_space-fsaverage5_bold.func.gii      fMRIPrep >= 21
    sub-01[_ses-1]_task-rest[_run-1]_space-fsaverage5_hemi-L.func.gii           older fMRIPrep
    sub-01[_ses-1]_task-rest[_run-1]_space-fsaverage_den-10k_bold.func.gii      den alias of fsaverage5
    sub-01[_ses-1]_task-rest[_run-1]_space-MNI152NLin2009cAsym[_res-2]_desc-preproc_bold.nii.gz
        + ..._desc-brain_mask.nii.gz
    sub-01[_ses-1]_task-rest[_run-1]_desc-confounds_timeseries.tsv               (older: _regressors.tsv)

Repetition times are read and cross-checked by :mod:`pavi_parcel.bids.sidecars`.

``BIDS_DIR`` may be the fMRIPrep folder itself or a raw dataset holding it under
``derivatives/fmriprep*``.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pavi_parcel.exceptions import BadInputError, BadInputErrors
from pavi_parcel.spaces import FSAVERAGE_DENSITIES, space_named

from .entities import NON_IDENTITY, build_name, normalize_label, parse_entities
from .sidecars import TR_TOLERANCE, gifti_timestep, nifti_tr, read_tr  # noqa: F401  (public API)

logger = logging.getLogger(__name__)

_LABEL = re.compile(r"^[A-Za-z0-9]+$")


# --------------------------------------------------------------------------- names






# --------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class BoldRun:
    """One preprocessed BOLD run and the files that belong to it.

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    session, task, run : str or None
        Entity labels (task is always present; session and run may be absent).
    space : str
        The template space (``fsaverage5``, ``MNI152NLin2009cAsym``), without resolution.
    bold : tuple of Path
        ``(left, right)`` GIFTIs on surfaces; ``(nifti,)`` for volumes.
    mask : Path or None
        fMRIPrep ``desc-brain_mask`` of a volume run; None on surfaces.
    confounds : Path or None
        fMRIPrep confounds table; None when the run has none.
    tr : float
        Repetition time in seconds.
    """

    subject: str
    session: str | None
    task: str
    run: str | None
    space: str
    bold: tuple[Path, ...]
    mask: Path | None
    confounds: Path | None
    tr: float

    @property
    def key(self) -> str:
        """``sub-01_ses-1_task-rest_run-1`` (absent entities left out): the run's file stem."""
        parts = [("sub", self.subject), ("ses", self.session), ("task", self.task), ("run", self.run)]
        return "_".join(f"{k}-{v}" for k, v in parts if v)


def find_runs(bids_dir: Path, space: str, participants: Sequence[str] = (), task: str | None = None,
              sessions: Sequence[str] | None = None) -> list[BoldRun]:
    """Find every preprocessed BOLD run of the requested space.

    Parameters
    ----------
    bids_dir : Path
        fMRIPrep derivatives folder, or a raw BIDS dataset with ``derivatives/fmriprep*``.
    space : str
        ``fsaverage5`` (any ``fsaverage*``) or a volume template such as
        ``MNI152NLin2009cAsym``; ``MNI152NLin2009cAsym:res-2`` picks one resolution.
    participants : sequence of str
        Labels with or without ``sub-``; empty for every participant.
    task : str or None
        Task label; None for every task.
    sessions : sequence of str or None
        Session labels with or without ``ses-``; None for every session.

    Returns
    -------
    list of BoldRun
        Sorted by subject, session, task and run.

    Raises
    ------
    BadInputError
        Missing or non-BIDS folder, unknown participants, no runs; several problems
        (a missing hemisphere, mask or repetition time, conflicting TRs) are reported
        together as :class:`BadInputErrors`.
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

    finder = _Finder(bids_dir, space_name, qualifiers, task, wanted_sessions)
    groups: dict[tuple, dict[str, Path]] = {}
    for root in roots:
        for subject in wanted:
            for folder in _func_folders(root / f"sub-{subject}"):
                finder.scan(folder, root, groups)
    runs, errors = [], list(finder.errors)
    for ident, files in sorted(groups.items(), key=lambda kv: _sort_key(dict(kv[0]))):
        try:
            runs.append(finder.make_run(dict(ident), files))
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
    _check_found(runs, wanted if participants else [], finder, bids_dir, space)
    skipped = sorted(set(wanted) - {r.subject for r in runs})
    if skipped:
        logger.warning("%d participant(s) without %s runs are left out: %s", len(skipped), space,
                       ", ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
    return runs


# --------------------------------------------------------------------------- discovery internals
def _check_dataset(bids_dir: Path) -> None:
    if not bids_dir.is_dir():
        raise BadInputError(f"BIDS_DIR {bids_dir} does not exist", "a folder holding a BIDS dataset",
                            "no such folder" if not bids_dir.exists() else "a file", "check the path")
    if not (bids_dir / "dataset_description.json").is_file() and not any(bids_dir.glob("sub-*")):
        raise BadInputError(f"{bids_dir} is not a BIDS dataset",
                            "a dataset_description.json or sub-* folders", "neither",
                            "pass the fMRIPrep output folder (or the raw dataset holding derivatives/fmriprep)")


def _parse_space(space: str) -> tuple[str, dict[str, str]]:
    name, _, rest = str(space).strip().partition(":")
    qualifiers = dict(q.split("-", 1) for q in rest.split(":") if "-" in q) if rest else {}
    if not name or not _LABEL.match(name):
        raise BadInputError(f"Invalid space {space!r}", "a space label such as fsaverage5 or "
                            "MNI152NLin2009cAsym[:res-2]", repr(space), "check data.space")
    space_named(name)  # an fs* name that is no fsaverage mesh is refused here
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


def _func_folders(subject_dir: Path) -> list[Path]:
    if not subject_dir.is_dir():
        return []
    return [p for p in [subject_dir / "func", *sorted(subject_dir.glob("ses-*/func"))] if p.is_dir()]


def _identity(entities: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in entities.items() if k not in NON_IDENTITY)


def _natural(value: str | None) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", value or "") if t)


def _sort_key(ident: Mapping[str, str]) -> tuple:
    return tuple(_natural(ident.get(k)) for k in ("sub", "ses", "task", "run")) + (sorted(ident.items()),)


class _Finder:
    """Scan func folders, group files into runs, pair masks, confounds and TRs."""

    def __init__(self, bids_dir: Path, space: str, qualifiers: dict[str, str], task: str | None,
                 sessions: set[str] | None):
        self.bids_dir, self.space, self.qualifiers = bids_dir, space, qualifiers
        self.task, self.sessions = task, sessions
        self.surface = space_named(space).is_surface
        self.errors: list[BadInputError] = []
        self.spaces_seen: set[str] = set()
        self.tasks_seen: set[str] = set()
        self.confounds: dict[tuple, list[Path]] = defaultdict(list)
        self.masks: set[Path] = set()
        self.roots: dict[tuple, Path] = {}

    def scan(self, folder: Path, root: Path, groups: dict[tuple, dict[str, Path]]) -> None:
        for path in sorted(folder.iterdir()):
            ents = parse_entities(path.name)
            if not ents or "sub" not in ents:
                continue
            if ents["extension"] == ".tsv" and ents.get("desc") == "confounds" \
                    and ents["suffix"] in ("timeseries", "regressors"):
                self.confounds[(folder, _identity(ents))].append(path)
            elif ents["suffix"] == "mask" and ents.get("desc") == "brain":
                self.masks.add(path)
            elif self._is_bold(ents) or (ents["suffix"] == "bold" and "space" not in ents
                                         and ents["extension"] in (".nii.gz", ".nii", ".func.gii")):
                self.spaces_seen.add(_file_space(ents))
                if _file_space(ents) == self.space:
                    self.tasks_seen.add(ents.get("task", ""))
                if self._is_bold(ents) and self._wanted(ents):
                    ident = _identity(ents)
                    part = ents.get("hemi", "") if self.surface else "vol"
                    previous = self.roots.setdefault(ident, root)
                    files = groups.setdefault(ident, {})
                    if previous != root or part in files:
                        other = files.get(part, previous)
                        self.errors.append(BadInputError(
                            f"Two BOLD files for run {build_name(dict(ident))}", "one file per run and space",
                            f"{other} and {path}", "point BIDS_DIR at a single fMRIPrep output folder "
                            "(or choose one resolution, e.g. data.space=NAME:res-2)"))
                        continue
                    files[part] = path

    def _is_bold(self, ents: dict[str, str]) -> bool:
        ext, suffix = ents["extension"], ents["suffix"]
        if ext == ".func.gii":
            return (suffix == "bold" or (suffix == "" and list(ents)[-3] == "hemi")) and "hemi" in ents \
                and ents.get("desc", "preproc") == "preproc"
        return ext in (".nii.gz", ".nii") and suffix == "bold" and ents.get("desc") == "preproc"

    def _wanted(self, ents: dict[str, str]) -> bool:
        if _file_space(ents) != self.space or "task" not in ents:
            return False
        if self.task is not None and ents["task"] != self.task:
            return False
        if self.sessions is not None and ents.get("ses") not in self.sessions:
            return False
        if (ents["extension"] == ".func.gii") != self.surface:
            return False
        return all(ents.get(k) == v for k, v in self.qualifiers.items())

    def make_run(self, ident: dict[str, str], files: dict[str, Path]) -> BoldRun:
        name = build_name(ident)
        if self.surface:
            missing = [h for h in ("L", "R") if h not in files]
            if missing:
                present = next(iter(files.values()))
                raise BadInputError(f"Run {name} lacks its hemi-{missing[0]} GIFTI",
                                    "both hemispheres (hemi-L and hemi-R)", f"only {present.name}",
                                    f"add the hemi-{missing[0]} file next to it or exclude the participant")
            bold, mask = (files["L"], files["R"]), None
        else:
            bold = (files["vol"],)
            mask = self._mask_for(bold[0])
        confounds = self._confounds_for(bold[0], ident)
        broken = [p for p in (*bold, mask, confounds) if p is not None and p.is_symlink() and not p.exists()]
        if broken:
            raise BadInputError(f"{broken[0].name} is a broken symbolic link", "a file with data",
                                f"a link to the missing {os.readlink(broken[0])}",
                                "fetch the data (`datalad get` / `git annex get`) or fix the link")
        tr = read_tr(bold, self.roots[tuple(ident.items())], self.bids_dir)
        return BoldRun(subject=ident["sub"], session=ident.get("ses"), task=ident["task"],
                       run=ident.get("run"), space=self.space, bold=bold, mask=mask,
                       confounds=confounds, tr=tr)

    def _mask_for(self, bold: Path) -> Path:
        ents = parse_entities(bold.name)
        ents["desc"] = "brain"
        candidates = [bold.with_name(build_name(ents, "mask", ext)) for ext in (".nii.gz", ".nii")]
        for candidate in candidates:
            if candidate in self.masks:
                return candidate
        raise BadInputError(f"No brain mask for {bold.name}", f"{candidates[0].name} next to it",
                            "no such file", "copy fMRIPrep's desc-brain_mask next to the run")

    def _confounds_for(self, bold: Path, ident: dict[str, str]) -> Path | None:
        found = self.confounds.get((bold.parent, tuple(ident.items())), [])
        # fMRIPrep >= 20.2 writes _timeseries.tsv; prefer it over the older _regressors.tsv
        found = sorted(found, key=lambda p: parse_entities(p.name)["suffix"] != "timeseries")
        return found[0] if found else None


def _file_space(ents: Mapping[str, str]) -> str:
    space = ents.get("space", "")
    if space == "fsaverage" and ents.get("den") in FSAVERAGE_DENSITIES:
        return FSAVERAGE_DENSITIES[ents["den"]]
    return space


def _check_found(runs: list[BoldRun], requested: list[str], finder: _Finder, bids_dir: Path,
                 space: str) -> None:
    name = finder.space
    res = f"_res-{finder.qualifiers['res']}" if "res" in finder.qualifiers else "[_res-*]"
    pattern = (f"*_hemi-{{L,R}}_space-{name}_bold.func.gii or *_space-{name}_hemi-{{L,R}}.func.gii"
               if finder.surface else f"*_space-{name}{res}_desc-preproc_bold.nii.gz")
    others = sorted(s for s in finder.spaces_seen if s and s != name)
    if finder.task is not None and finder.tasks_seen - {finder.task, ""}:
        hint = f"only task {', '.join(sorted(finder.tasks_seen - {''}))} in space-{name}"
    elif name in finder.spaces_seen:
        hint = f"space-{name} runs, none matching the participant, session or resolution filters"
    elif others:
        hint = f"found {', '.join('space-' + s for s in others)} runs; use data.space={others[0]}"
    else:
        hint = "found no preprocessed runs in any space"
    if "" in finder.spaces_seen:
        hint += " (raw BOLD without a space: run fMRIPrep first and point BIDS_DIR at its output)"
    if not runs:
        where = f"participant {', '.join(requested)}" if requested else "any participant"
        raise BadInputError(f"No BOLD runs found for {where} in {bids_dir}", f"files named {pattern}",
                            hint, "check data.space, participant_label and the task/session filters")
    without = [p for p in requested if p not in {r.subject for r in runs}]
    if without:
        raise BadInputError(f"No BOLD runs found for participant {', '.join(without)} in {bids_dir}",
                            f"files named {pattern}", hint, "check data.space or drop these participants")
