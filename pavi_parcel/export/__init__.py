"""Export: BIDS-derivative maps, label tables and the HTML report with its figures."""

from .maps import export_maps
from .report import build_report
from .stage import export_stage

__all__ = ["build_report", "export_maps", "export_stage"]
