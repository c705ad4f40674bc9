"""Workflows: the stage order of a fit, new subjects, the demo and Hydra sweeps."""

from .api import run_pipeline
from .apply import apply_subjects
from .demo import run_demo
from .pipeline import run
from .sweep import run_sweep

__all__ = ["apply_subjects", "run", "run_demo", "run_pipeline", "run_sweep"]
