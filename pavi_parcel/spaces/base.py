"""Where the modelled vertices (or voxels) live."""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np


@dataclass(frozen=True)
class SpaceInfo:
    """Where the modelled vertices (or voxels) live.

    Attributes
    ----------
    space : str
        ``"fsaverage5"`` or a volume template name such as ``"MNI152NLin2009cAsym"``.
    n_total : int
        Size of the full space: 20,484 for fsaverage5 (left then right hemisphere), the
        number of grid points ``prod(grid_shape)`` for volumes.
    grid_shape : tuple of int or None
        Volume grid shape (x, y, z); None on surfaces.
    affine : ndarray of shape (4, 4) or None
        Volume voxel-to-world affine; None on surfaces.
    """

    space: str
    n_total: int
    grid_shape: tuple[int, ...] | None = None
    affine: np.ndarray | None = field(default=None, compare=False)

    @property
    def is_surface(self) -> bool:
        return self.grid_shape is None

    def to_attrs(self, attrs: h5py.AttributeManager) -> None:
        attrs["space"] = self.space
        attrs["n_total"] = int(self.n_total)
        if self.grid_shape is not None:
            attrs["grid_shape"] = np.asarray(self.grid_shape, dtype=np.int64)
            attrs["affine"] = np.asarray(self.affine, dtype=np.float64)

    @classmethod
    def from_attrs(cls, attrs: h5py.AttributeManager) -> "SpaceInfo":
        grid = tuple(int(v) for v in attrs["grid_shape"]) if "grid_shape" in attrs else None
        affine = np.asarray(attrs["affine"]) if "affine" in attrs else None
        return cls(str(attrs["space"]), int(attrs["n_total"]), grid, affine)

