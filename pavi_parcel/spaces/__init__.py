"""Spaces: where the modelled points live, how runs are read there and how maps are written.

:class:`FsaverageSpace` (GIFTI surfaces, fsaverage3 ... fsaverage) and :class:`VolumeSpace`
(NIfTI grids) implement :class:`Space`; :func:`space_named` and :func:`space_from_attrs` give
the space of a BIDS label or of a store.
"""

from .base import MAP_KINDS, CleanedRun, Hemisphere, RunHeader, Space
from .fsaverage import FSAVERAGE_DENSITIES, FSAVERAGE_VERTICES, FsaverageSpace
from .registry import space_from_attrs, space_named
from .volume import VolumeSpace

__all__ = ["CleanedRun", "FSAVERAGE_DENSITIES", "FSAVERAGE_VERTICES", "FsaverageSpace", "Hemisphere", "MAP_KINDS",
           "RunHeader", "Space", "VolumeSpace", "space_from_attrs", "space_named"]
