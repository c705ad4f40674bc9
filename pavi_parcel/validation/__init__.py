"""Validation of fitted maps: against planted truth, held-out runs, or across training sessions."""

from .scoring import truth_metrics, validate_run

__all__ = ["truth_metrics", "validate_run"]
