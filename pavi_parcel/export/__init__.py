"""Export: BIDS-derivative maps, label tables and the HTML report with its figures."""

from .maps import export_from_config, export_maps
from .report import build_report

__all__ = ["build_report", "export_from_config", "export_maps"]
