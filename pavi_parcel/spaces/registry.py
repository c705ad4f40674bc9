"""Which :class:`~.base.Space` a name or a store's attributes stand for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pavi_parcel.exceptions import BadInputError

from .base import Space
from .fsaverage import FSAVERAGE_DENSITIES, FSAVERAGE_VERTICES, FsaverageSpace
from .fslr import FslrSpace
from .volume import VolumeSpace


def space_named(name: str, mesh_dir: str | Path | None = None) -> Space:
    """The space a BIDS ``space`` label names: an fsaverage mesh, or a volume template (no grid yet).

    ``mesh_dir`` is a folder to look in first for a surface space's mesh (``data.mesh_dir``).

    Raises
    ------
    BadInputError
        An ``fs*`` name that is no fsaverage mesh.
    """
    if name in FSAVERAGE_VERTICES:
        return FsaverageSpace(name, mesh_dir)
    if name == "fsLR":
        return FslrSpace(name)
    if name.lower().startswith("fs"):
        raise BadInputError(f"Unsupported surface space {name!r}", "fsLR or one of " + ", ".join(
                            sorted(FSAVERAGE_VERTICES)), name, "set data.space to fsLR (CIFTI), an fsaverage mesh "
                            "(GIFTI) or a volume template")
    return VolumeSpace(name)


@dataclass(frozen=True)
class BoldFile:
    """What a file name says of a preprocessed BOLD file, before any space is chosen.

    Attributes
    ----------
    space : str
        The space it is in, as ``data.space`` names it (``fsaverage`` ``den-10k`` is ``fsaverage5``).
    label : str
        The space as the name spells it, for messages: ``space-fsLR_den-91k``.
    kind : str
        ``GIFTI``, ``CIFTI`` or ``NIfTI``.
    part : str
        ``L`` / ``R`` for one hemisphere of a GIFTI pair, ``""`` for a whole run.
    """

    space: str
    label: str
    kind: str
    part: str


_KIND = {".func.gii": "GIFTI", ".dtseries.nii": "CIFTI", ".nii.gz": "NIfTI", ".nii": "NIfTI"}
_DESCS = {"GIFTI": ("preproc",), "CIFTI": ("preproc", "denoised"), "NIfTI": ("preproc",)}
"""``desc`` values of preprocessed runs: fMRIPrep's (absent or ``preproc``) and XCP-D's ``denoised``."""


def bold_file(entities: Mapping[str, str]) -> BoldFile | None:
    """The space, format and part of a BOLD file from its parsed name; None for other files.

    ``entities`` is what :func:`pavi_parcel.bids.entities.parse_entities` returns. Understood:
    ``*[_hemi-L]_space-X[_den-D|_res-R]_bold.func.gii`` (and fMRIPrep < 21's
    ``*_space-X_hemi-L.func.gii``), ``*_space-X[_den-D]_bold.dtseries.nii`` and
    ``*_space-X[_res-R]_desc-preproc_bold.nii[.gz]``.
    """
    kind = _KIND.get(entities.get("extension", ""))
    suffix = entities.get("suffix", "")
    legacy = kind == "GIFTI" and suffix == "" and list(entities)[-3:-2] == ["hemi"]
    if kind is None or "space" not in entities or (suffix != "bold" and not legacy):
        return None
    desc = entities.get("desc")
    if (desc is None and kind == "NIfTI") or (desc is not None and desc not in _DESCS[kind]):
        return None
    if kind == "GIFTI" and "hemi" not in entities:
        return None
    space = entities["space"]
    if space == "fsaverage" and entities.get("den") in FSAVERAGE_DENSITIES:
        space = FSAVERAGE_DENSITIES[entities["den"]]
    label = "_".join(f"{k}-{entities[k]}" for k in ("space", "den", "res") if k in entities)
    return BoldFile(space, label, kind, entities.get("hemi", "") if kind == "GIFTI" else "")


def space_from_attrs(attrs: Mapping[str, Any]) -> Space:
    """The space recorded by :meth:`Space.to_attrs` (HDF5 attributes of a store, a run's attributes)."""
    name, n_total = str(attrs["space"]), int(attrs["n_total"])
    if "grid_shape" in attrs and attrs["grid_shape"] is not None:
        return VolumeSpace(name, tuple(int(v) for v in attrs["grid_shape"]), np.asarray(attrs["affine"]))
    space = space_named(name, attrs.get("mesh_dir"))
    if space.n_total != n_total:
        raise BadInputError(f"A store of space {name} has {n_total} points", f"{space.n_total} points ({name})",
                            str(n_total), "delete the work folder and rerun the same command")
    return space


__all__ = ["BoldFile", "bold_file", "space_from_attrs", "space_named"]
