"""BIDS input: file-name entities, discovery of fMRIPrep runs, repetition times from sidecars and headers."""

from .discovery import BoldRun, find_runs
from .entities import build_name, normalize_label, parse_entities
from .sidecars import read_tr

__all__ = ["BoldRun", "build_name", "find_runs", "normalize_label", "parse_entities", "read_tr"]
