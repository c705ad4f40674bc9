"""Spaces: where the modelled points live, how runs are read there and how maps are written.

:class:`FsaverageSpace` (GIFTI surfaces, fsaverage3 ... fsaverage), :class:`FslrSpace` (CIFTI
grayordinates on the fsLR 32k mesh) and :class:`VolumeSpace` (NIfTI grids) implement
:class:`Space`; :func:`space_named` and :func:`space_from_attrs` give the space of a BIDS label
or of a store.
"""

from .base import MAP_KINDS, CleanedRun, Hemisphere, RunHeader, Space
from .fsaverage import FSAVERAGE_DENSITIES, FSAVERAGE_VERTICES, FsaverageSpace
from .fslr import FslrSpace
from .meshes import MeshUnavailable
from .registry import space_from_attrs, space_named
from .surface import SurfaceSpace
from .volume import VolumeSpace

__all__ = ["CleanedRun", "FSAVERAGE_DENSITIES", "FSAVERAGE_VERTICES", "FslrSpace", "FsaverageSpace",
           "Hemisphere", "MAP_KINDS",
           "MeshUnavailable", "RunHeader", "Space", "SurfaceSpace", "VolumeSpace", "space_from_attrs", "space_named"]
