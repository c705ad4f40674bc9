"""Repetition time of a BOLD run, from its sidecar JSON (BIDS inheritance) and image headers.

Sources, all checked against each other: ``RepetitionTime`` of the most specific applicable
``*_bold.json`` (the run's own JSON first, then the folders above it, then the raw dataset's
folders when the run sits in ``derivatives/fmriprep``), the ``TimeStep`` meta of each GIFTI
(milliseconds, FreeSurfer's and fMRIPrep's convention) and the NIfTI ``pixdim[4]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from pavi_parcel.exceptions import BadInputError

from .entities import parse_entities

TR_TOLERANCE = 1e-3  # relative disagreement between TR sources that counts as a conflict


def read_tr(bold: Sequence[Path], root: Path | None = None, bids_dir: Path | None = None) -> float:
    """Repetition time of a run in seconds, checked across every source that has one.

    Sources: ``RepetitionTime`` of the sidecar JSON found by BIDS inheritance (the run's
    own JSON first), the ``TimeStep`` meta of each GIFTI (milliseconds, FreeSurfer's and
    fMRIPrep's convention), the NIfTI ``pixdim[4]`` (units from ``xyzt_units``).

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
        header = gifti_timestep(path) if path.name.endswith(".gii") else nifti_tr(path)
        if header is not None:
            sources.append((f"{'TimeStep' if path.name.endswith('.gii') else 'pixdim[4]'} of {path.name}", header))
    if not sources:
        own = _own_sidecar(bold[0])
        raise BadInputError(f"No repetition time for {bold[0].name}",
                            "RepetitionTime in a sidecar JSON, a GIFTI TimeStep or a NIfTI pixdim[4]",
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


_TIMESTEP = re.compile(rb"<Name>\s*(?:<!\[CDATA\[)?\s*TimeStep\s*(?:\]\]>)?\s*</Name>\s*"
                       rb"<Value>\s*(?:<!\[CDATA\[)?\s*([^<\]\s]*)")


def gifti_timestep(path: Path, max_bytes: int = 1 << 20) -> float | None:
    """The TR in seconds from a GIFTI's ``TimeStep`` meta, reading only the file's head.

    ``TimeStep`` is in milliseconds in FreeSurfer's and fMRIPrep's GIFTIs; a value below
    20 cannot be a BOLD TR in milliseconds and is read as seconds. None when absent or 0.
    """
    head = b""
    try:
        with open(path, "rb") as handle:
            while len(head) < max_bytes:
                chunk = handle.read(65536)
                head += chunk
                if not chunk or b"<Data>" in head or b"<Data " in head:
                    break
    except OSError:
        return None
    match = _TIMESTEP.search(head.split(b"<Data>", 1)[0])
    try:
        value = float(match.group(1)) if match else 0.0
    except ValueError:
        return None
    if not value > 0:
        return None
    return value if value < 20 else value / 1000.0


def nifti_tr(path: Path) -> float | None:
    """The TR in seconds from a NIfTI header's ``pixdim[4]`` (None when absent or 0).

    Raises
    ------
    BadInputError
        When the header cannot be read.
    """
    import nibabel as nib

    try:
        header = nib.load(str(path)).header
    except Exception as exc:  # nibabel raises many types for broken files
        raise BadInputError(f"Cannot read the NIfTI header of {path}", "a readable NIfTI image",
                            f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                            "re-run fMRIPrep for this run or exclude the participant") from exc
    zooms = header.get_zooms()
    if len(zooms) < 4 or not zooms[3] > 0:
        return None
    unit = header.get_xyzt_units()[1]
    scale = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6, "unknown": 1.0}.get(unit)
    return None if scale is None else float(zooms[3]) * scale
