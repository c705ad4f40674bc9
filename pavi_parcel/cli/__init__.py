"""Command line: ``pavi-parcel`` (Typer), a thin layer over the library."""

from .app import app, main

__all__ = ["app", "main"]
