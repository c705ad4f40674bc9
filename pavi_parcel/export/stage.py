"""The export stage of a fit: maps of every subject and the group, then (when asked) the report."""

from __future__ import annotations

from pathlib import Path

from pavi_parcel.settings.schema import ExportSettings

from .maps import export_maps
from .report import build_report


def export_stage(out_dir: Path, settings: ExportSettings) -> list[Path]:
    """Write the maps of a fitted run as ``export.*`` asks, and ``report.html`` with ``export.report``.

    Parameters
    ----------
    out_dir : Path
        The run's output folder, holding ``model/posterior.h5``.
    settings : ExportSettings
        ``format``, ``reference``, ``uncertainty``, ``report``.

    Returns
    -------
    list of Path
        Every file written.
    """
    fmt = None if settings.format == "auto" else settings.format
    written = export_maps(Path(out_dir), fmt, settings.reference, settings.uncertainty)
    if settings.report:
        written.append(build_report(Path(out_dir)))
    return written


__all__ = ["export_stage"]
