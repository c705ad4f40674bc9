"""Which :class:`~.base.Space` a name or a store's attributes stand for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pavi_parcel.exceptions import BadInputError

from .base import Space
from .fsaverage import FSAVERAGE_VERTICES, FsaverageSpace
from .volume import VolumeSpace


def space_named(name: str) -> Space:
    """The space a BIDS ``space`` label names: an fsaverage mesh, or a volume template (no grid yet).

    Raises
    ------
    BadInputError
        An ``fs*`` name that is no fsaverage mesh.
    """
    if name in FSAVERAGE_VERTICES:
        return FsaverageSpace(name)
    if name.startswith("fs"):
        raise BadInputError(f"Unsupported surface space {name!r}", "one of " + ", ".join(sorted(FSAVERAGE_VERTICES)),
                            name, "ask fMRIPrep for --output-spaces fsaverage:den-10k and set data.space=fsaverage5")
    return VolumeSpace(name)


def space_from_attrs(attrs: Mapping[str, Any]) -> Space:
    """The space recorded by :meth:`Space.to_attrs` (HDF5 attributes of a store, a run's attributes)."""
    name, n_total = str(attrs["space"]), int(attrs["n_total"])
    if "grid_shape" in attrs and attrs["grid_shape"] is not None:
        return VolumeSpace(name, tuple(int(v) for v in attrs["grid_shape"]), np.asarray(attrs["affine"]))
    space = space_named(name)
    if space.n_total != n_total:
        raise BadInputError(f"A store of space {name} has {n_total} points", f"{space.n_total} points ({name})",
                            str(n_total), "delete the work folder and rerun the same command")
    return space


__all__ = ["space_from_attrs", "space_named"]
