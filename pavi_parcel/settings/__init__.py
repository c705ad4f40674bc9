"""Settings of a run: composition of conf/ with overrides, validation."""

from .compose import compose

__all__ = ["compose"]
