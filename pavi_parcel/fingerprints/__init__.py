"""Connectivity fingerprints: correlations, binarisation, the cohort store and new subjects."""

from .compute import binarize_top_fraction, compute_fingerprints, run_correlations
from .new_subjects import subject_fingerprints

__all__ = ["binarize_top_fraction", "compute_fingerprints", "run_correlations", "subject_fingerprints"]
