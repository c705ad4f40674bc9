"""The export stage of a fit: maps of every subject and the group (the report comes after the connectomes:
:func:`pavi_parcel.workflows.pipeline.publish`)."""

from __future__ import annotations

from pathlib import Path

from pavi_parcel.settings.schema import ExportSettings

from .maps import export_maps


def export_stage(out_dir: Path, settings: ExportSettings) -> list[Path]:
    """Write the maps of a fitted run as ``export.*`` asks.

    Parameters
    ----------
    out_dir : Path
        The run's output folder, holding ``model/posterior.h5``.
    settings : ExportSettings
        ``format``, ``reference``, ``uncertainty`` (``report`` is the caller's).

    Returns
    -------
    list of Path
        Every file written.
    """
    fmt = None if settings.format == "auto" else settings.format
    return export_maps(Path(out_dir), fmt, settings.reference, settings.uncertainty)


__all__ = ["export_stage"]
