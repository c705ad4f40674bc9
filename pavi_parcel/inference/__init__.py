"""Inference: the training loop, passes, calibration, initialisation, memory plans and the fitted run."""

from .estimator import PaviParcellation
from .fitted_run import FittedRun, load_fitted_run, load_model_state
from .resources import plan_fit
from .training import fit_model

__all__ = ["FittedRun", "PaviParcellation", "fit_model", "load_fitted_run", "load_model_state", "plan_fit"]
