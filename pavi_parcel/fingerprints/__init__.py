"""Connectivity fingerprints: seeds, correlations, binarisation, the cohort store and new subjects."""

from .compute import binarize_top_fraction, compute_fingerprints, run_correlations
from .new_subjects import subject_fingerprints
from .seeds import default_surface_seeds, volume_grid_seeds

__all__ = ["binarize_top_fraction", "compute_fingerprints", "default_surface_seeds", "run_correlations", "subject_fingerprints", "volume_grid_seeds"]
