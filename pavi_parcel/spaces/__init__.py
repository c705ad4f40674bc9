"""Where the modelled vertices (or voxels) live."""

from .base import SpaceInfo

__all__ = ["SpaceInfo"]
