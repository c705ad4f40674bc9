"""Repetition time of a BOLD run, from its sidecar JSON (BIDS inheritance) and image headers.

Sources, all checked against each other: ``RepetitionTime`` of the most specific applicable
``*_bold.json`` (the run's own JSON first, then the folders above it, then the raw dataset's
folders when the run sits in ``derivatives/fmriprep``), and the image headers, read by the run's
space (GIFTI ``TimeStep`` in milliseconds, NIfTI ``pixdim[4]``, CIFTI series step).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.spaces import Space

from .entities import parse_entities

TR_TOLERANCE = 1e-3  # relative disagreement between TR sources that counts as a conflict


def read_tr(bold: Sequence[Path], space: Space, root: Path | None = None, bids_dir: Path | None = None) -> float:
    """Repetition time of a run in seconds, checked across every source that has one.

    Sources: ``RepetitionTime`` of the sidecar JSON found by BIDS inheritance (the run's
    own JSON first), and what the image headers of the run's space say
    (:meth:`pavi_parcel.spaces.Space.header_tr`: a GIFTI ``TimeStep``, the NIfTI ``pixdim[4]``,
    the step of a CIFTI series axis).

    Raises
    ------
    BadInputError
        When no source has a TR, or two disagree by more than 0.1 %.
    """
    sources: list[tuple[str, float]] = []
    for path in bold:
        sidecar = _sidecar_tr(path, root or path.parent, bids_dir)
        if sidecar is not None:
            sources.append(sidecar)
        header = space.header_tr(path)
        if header is not None:
            sources.append(header)
    if not sources:
        own = _own_sidecar(bold[0])
        raise BadInputError(f"No repetition time for {bold[0].name}",
                            "RepetitionTime in a sidecar JSON or in the image header (GIFTI TimeStep, NIfTI "
                            "pixdim[4], CIFTI series step)",
                            "none of them", f'add {{"RepetitionTime": <seconds>}} to {own}')
    values = [v for _, v in sources]
    if (max(values) - min(values)) > TR_TOLERANCE * min(values):
        listing = ", ".join(f"{v:g} s from {s}" for s, v in sources)
        raise BadInputError(f"Repetition times disagree for {bold[0].name}", "one TR across sources",
                            listing, "correct the sidecar JSON or the image header")
    return float(sources[0][1])


def _own_sidecar(path: Path) -> Path:
    return path.with_name(path.name.split(".", 1)[0] + ".json")


def _sidecar_tr(path: Path, root: Path, bids_dir: Path | None) -> tuple[str, float] | None:
    """``RepetitionTime`` from the most specific applicable JSON (BIDS inheritance)."""
    def candidates():
        yield _own_sidecar(path)
        yield from _inherited_sidecars(path, root, bids_dir)

    for candidate in candidates():
        if candidate.is_file():
            try:
                meta = json.loads(candidate.read_text())
            except (OSError, ValueError) as exc:
                raise BadInputError(f"Cannot read the sidecar {candidate}", "a valid JSON file",
                                    exc.__class__.__name__, "fix or remove the file") from exc
            if isinstance(meta, dict) and "RepetitionTime" in meta:
                try:
                    return f"RepetitionTime of {candidate.name}", float(meta["RepetitionTime"])
                except (TypeError, ValueError) as exc:
                    raise BadInputError(f"Invalid RepetitionTime in {candidate}", "a number of seconds",
                                        repr(meta["RepetitionTime"]), "fix the sidecar") from exc
    return None


def _inherited_sidecars(path: Path, root: Path, bids_dir: Path | None) -> list[Path]:
    """Applicable ``*_bold.json`` files, most specific first: the run's folder up to the root,
    then the same folders of the raw dataset when the root is a derivatives folder inside it."""

    ents = parse_entities(path.name)
    if not ents or ents["suffix"] != "bold":
        return []
    entity_set = {(k, v) for k, v in ents.items() if k not in ("suffix", "extension")}
    chains = [_up_to(path.parent, root)]
    if bids_dir is not None and root != bids_dir and path.parent.is_relative_to(root):
        rel = path.parent.relative_to(root)
        chains.append(_up_to(bids_dir / rel, bids_dir))
    found = []
    for chain in chains:
        for folder in chain:
            matches = []
            for candidate in folder.glob("*_bold.json") if folder.is_dir() else []:
                c = parse_entities(candidate.name)
                if c and {(k, v) for k, v in c.items() if k not in ("suffix", "extension")} <= entity_set:
                    matches.append((len(c), candidate))
            found += [p for _, p in sorted(matches, key=lambda m: -m[0])]
    return found


def _up_to(folder: Path, root: Path) -> list[Path]:
    chain = [folder]
    while folder != root and folder.parent != folder and root in folder.parents:
        folder = folder.parent
        chain.append(folder)
    return chain
