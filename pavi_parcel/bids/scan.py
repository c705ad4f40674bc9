"""Scanning a dataset's func folders: BOLD files of every space grouped into runs, and what was seen.

:class:`RunFinder` looks at file names only (and sidecars and headers of the runs it keeps):
the BOLD files of every space (:func:`pavi_parcel.spaces.registry.bold_file`), confounds tables
and brain masks; then the space is chosen (``auto``: the only one with runs), its files are
grouped into :class:`~.run.BoldRun` s, and a message about runs not found says what the dataset
does hold (other spaces and formats, tasks, raw BOLD).
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.spaces import Space
from pavi_parcel.spaces.registry import BoldFile, bold_file

from .entities import NON_IDENTITY, build_name, parse_entities
from .run import BoldRun
from .sidecars import read_tr

_RAW_EXTENSIONS = (".nii.gz", ".nii", ".func.gii", ".dtseries.nii")
_IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".gii")


def func_folders(subject_dir: Path) -> list[Path]:
    if not subject_dir.is_dir():
        return []
    return [p for p in [subject_dir / "func", *sorted(subject_dir.glob("ses-*/func"))] if p.is_dir()]


def _identity(entities: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((k, v) for k, v in entities.items() if k not in NON_IDENTITY)


def _natural(value: str | None) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", value or "") if t)


def sort_key(ident: Mapping[str, str]) -> tuple:
    return tuple(_natural(ident.get(k)) for k in ("sub", "ses", "task", "run")) + (sorted(ident.items()),)


_Ident = tuple[tuple[str, str], ...]


class RunFinder:
    """Scan func folders: BOLD files of every space grouped into runs, confounds, masks, what was seen."""

    def __init__(self, bids_dir: Path, qualifiers: dict[str, str], task: str | None, sessions: set[str] | None):
        self.bids_dir, self.qualifiers, self.task, self.sessions = bids_dir, qualifiers, task, sessions
        #: (space, kind) -> run identity -> part -> path, for the files passing the task/session filters
        self.files: dict[tuple[str, str], dict[_Ident, dict[str, Path]]] = defaultdict(dict)
        self.roots: dict[tuple[str, str, _Ident], Path] = {}
        self.duplicates: dict[tuple[str, str], list[BadInputError]] = defaultdict(list)
        self.seen: Counter[tuple[str, str, str]] = Counter()     # (space, label, kind) -> files, unfiltered
        self.tasks_seen: dict[str, set[str]] = defaultdict(set)  # space -> tasks
        self.sessions_seen: dict[str, set[str]] = defaultdict(set)  # space -> sessions
        self.not_bids: list[Path] = []                           # image files whose names are not BIDS
        self.subjects: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.raw_bold = False
        self.confounds: dict[tuple, list[Path]] = defaultdict(list)
        self.masks: set[Path] = set()

    def scan(self, folder: Path, root: Path) -> None:
        for path in sorted(folder.iterdir()):
            ents = parse_entities(path.name)
            if not ents or "sub" not in ents:
                if path.name.endswith(_IMAGE_EXTENSIONS):
                    self.not_bids.append(path)
                continue
            if ents["extension"] == ".tsv" and ents.get("desc") == "confounds" \
                    and ents["suffix"] in ("timeseries", "regressors"):
                self.confounds[(folder, _identity(ents))].append(path)
            elif ents["suffix"] == "mask" and ents.get("desc") == "brain":
                self.masks.add(path)
            elif ents["suffix"] == "bold" and "space" not in ents and ents["extension"] in _RAW_EXTENSIONS:
                self.raw_bold = True
            else:
                found = bold_file(ents)
                if found is not None:
                    self._add(found, ents, path, root)

    def _add(self, found: BoldFile, ents: dict[str, str], path: Path, root: Path) -> None:
        self.seen[(found.space, found.label, found.kind)] += 1
        if "task" not in ents:
            return
        self.tasks_seen[found.space].add(ents["task"])
        if "ses" in ents:
            self.sessions_seen[found.space].add(ents["ses"])
        if (self.task is not None and ents["task"] != self.task) \
                or (self.sessions is not None and ents.get("ses") not in self.sessions) \
                or not all(ents.get(k) == v for k, v in self.qualifiers.items()):
            return
        key, ident = (found.space, found.kind), _identity(ents)
        self.subjects[key].add(ents["sub"])
        previous = self.roots.setdefault((*key, ident), root)
        files = self.files[key].setdefault(ident, {})
        if previous != root or found.part in files:
            other = files.get(found.part, previous)
            self.duplicates[key].append(BadInputError(
                f"Two BOLD files for run {build_name(dict(ident))}", "one file per run and space",
                f"{other} and {path}", "point BIDS_DIR at a single fMRIPrep output folder "
                "(or choose one resolution, e.g. data.space=NAME:res-2)"))
            return
        files[found.part] = path

    # ------------------------------------------------------------------ the space
    def choose(self, name: str | None, bids_dir: Path) -> str | None:
        """The space to read: ``name``, or with ``auto`` the one space with runs (None when there is none)."""
        if name is not None:
            return name
        spaces = sorted({space for (space, _), groups in self.files.items() if groups})
        if len(spaces) > 1:
            listing = ", ".join(f"space-{s} ({self._describe(s)})" for s in spaces)
            raise BadInputError(f"Runs in {len(spaces)} spaces in {bids_dir}", "the runs of one space "
                                "(data.space=auto takes a space only when it is the only one)", listing,
                                f"choose one with data.space={spaces[0]} (or another of them)")
        return spaces[0] if spaces else None

    def _describe(self, space: str) -> str:
        parts = [f"{len(groups)} {kind} run(s)" for (s, kind), groups in sorted(self.files.items()) if s == space]
        return ", ".join(parts)

    def groups(self, space: Space) -> dict[_Ident, dict[str, Path]]:
        return self.files.get((space.name, space.file_kind), {})

    def errors_for(self, space: Space | None) -> list[BadInputError]:
        return [] if space is None else self.duplicates.get((space.name, space.file_kind), [])

    def check_one_format(self, space: Space, wanted: Sequence[str]) -> None:
        """Participants with runs only in another format than the space reads (GIFTI among CIFTI) are an error."""
        readable = self.subjects.get((space.name, space.file_kind), set())
        others = {kind: sorted((subjects & set(wanted)) - readable)
                  for (_, kind), subjects in self.subjects.items() if kind != space.file_kind}
        for kind, subjects in sorted(others.items()):
            if subjects and readable:
                names = ", ".join(subjects[:10]) + (" ..." if len(subjects) > 10 else "")
                raise BadInputError(f"{space.file_kind} and {kind} runs mixed in one cohort",
                                    f"{space.file_kind} runs for every participant (space-{space.name})",
                                    f"only {kind} runs for participant {names}",
                                    "give them runs in the same format and space, or list only the other "
                                    "participants with participant_label")

    def make_run(self, space: Space, ident: dict[str, str], files: dict[str, Path]) -> BoldRun:
        name = build_name(ident)
        missing = [part for part in space.bold_parts if part not in files]
        if missing:
            present = next(iter(files.values()))
            raise BadInputError(f"Run {name} lacks its hemi-{missing[0]} GIFTI",
                                "both hemispheres (hemi-L and hemi-R)", f"only {present.name}",
                                f"add the hemi-{missing[0]} file next to it or exclude the participant")
        bold = tuple(files[part] for part in space.bold_parts)
        mask = self._mask_for(bold[0]) if space.needs_mask else None
        confounds = self._confounds_for(bold[0], ident)
        broken = [p for p in (*bold, mask, confounds) if p is not None and p.is_symlink() and not p.exists()]
        if broken:
            raise BadInputError(f"{broken[0].name} is a broken symbolic link", "a file with data",
                                f"a link to the missing {os.readlink(broken[0])}",
                                "fetch the data (`datalad get` / `git annex get`) or fix the link")
        root = self.roots[(space.name, space.file_kind, tuple(ident.items()))]
        tr = read_tr(bold, space, root, self.bids_dir)
        return BoldRun(subject=ident["sub"], session=ident.get("ses"), task=ident["task"],
                       run=ident.get("run"), space=space, bold=bold, mask=mask, confounds=confounds, tr=tr)

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


_PATTERNS = {"GIFTI": "*_hemi-{{L,R}}_space-{name}_bold.func.gii or *_space-{name}_hemi-{{L,R}}.func.gii",
             "CIFTI": "*_space-{name}[_den-91k]_bold.dtseries.nii",
             "NIfTI": "*_space-{name}{res}_desc-preproc_bold.nii.gz"}


def check_found(runs: list[BoldRun], requested: list[str], finder: RunFinder, bids_dir: Path,
                space: Space | None, name: str | None, elsewhere: Sequence[str] = ()) -> None:
    """Raise when no run (or none of a requested participant) was found, saying what the dataset holds.

    ``elsewhere``: other participants of the dataset that have runs in the space (when some were requested).
    """
    res = f"_res-{finder.qualifiers['res']}" if "res" in finder.qualifiers else "[_res-*]"
    if space is None:
        pattern = "BOLD files in a space (*_space-<label>_bold.func.gii, *_bold.dtseries.nii or " \
                  "*_desc-preproc_bold.nii.gz)"
    else:
        pattern = "files named " + _PATTERNS[space.file_kind].format(name=space.name, res=res)
    hint = _hint(finder, space, elsewhere)
    if not runs:
        where = f"participant {', '.join(requested)}" if requested else "any participant"
        raise BadInputError(f"No BOLD runs found for {where} in {bids_dir}", pattern, hint,
                            "check data.space, participant_label and the task/session filters")
    without = [p for p in requested if p not in {r.subject for r in runs}]
    if without:
        raise BadInputError(f"No BOLD runs found for participant {', '.join(without)} in {bids_dir}",
                            pattern, hint, "check data.space or drop these participants")


def _listing(values: Sequence[str], most: int = 5) -> str:
    values = list(values)
    return ", ".join(values[:most]) + (f" and {len(values) - most} more" if len(values) > most else "")


def _hint(finder: RunFinder, space: Space | None, elsewhere: Sequence[str] = ()) -> str:
    """What the dataset does hold, for a message about runs not found: every lead, most useful first."""
    own = [(s, label, kind) for s, label, kind in sorted(finder.seen)
           if space is not None and s == space.name and kind == space.file_kind]
    others = [key for key in sorted(finder.seen) if key not in own]
    leads = []
    if space is not None:
        tasks, sessions = finder.tasks_seen.get(space.name, set()), finder.sessions_seen.get(space.name, set())
        if finder.task is not None and tasks and finder.task not in tasks:
            leads.append(f"only task {_listing(sorted(tasks))} in space-{space.name} (data.task)")
        if finder.sessions is not None and sessions and not sessions & finder.sessions:
            leads.append(f"only session {_listing(sorted(sessions))} in space-{space.name} (data.sessions)")
        unmatched = [label for _, label, _ in own if finder.qualifiers and not all(
            f"{k}-{v}" in label.split("_") for k, v in finder.qualifiers.items())]
        if unmatched:
            labels = sorted(set(unmatched))
            leads.append(f"found {_listing(labels)} runs; use data.space={labels[0][len('space-'):].replace('_', ':')}")
        elif own and not leads:
            leads.append(f"space-{space.name} runs, none matching the participant, session or resolution filters")
    if others:
        listing = _listing([f"{label} runs ({kind})" for _, label, kind in others])
        leads.append(f"found {listing}; use data.space={others[0][0]}")
    if elsewhere:
        leads.append(f"runs of other participants: {_listing(list(elsewhere), 10)} (participant_label)")
    if finder.not_bids:
        leads.append(f"{len(finder.not_bids)} image file(s) whose names are not BIDS, e.g. {finder.not_bids[0].name} "
                     "(fMRIPrep names runs sub-<label>[_ses-<label>]_task-<label>[_run-<index>]_space-<label>...)")
    hint = "; ".join(leads) or "found no preprocessed runs in any space"
    if finder.raw_bold:
        hint += " (raw BOLD without a space: run fMRIPrep first and point BIDS_DIR at its output)"
    return hint


__all__ = ["RunFinder", "check_found", "func_folders", "sort_key"]
