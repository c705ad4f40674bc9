"""Ingestion: cheap checks of every run, fMRIPrep confounds, masking and cleaning with nilearn."""

from .cleaning import ingest_runs
from .confounds import IngestSettings, RunConfounds, load_run_confounds
from .runcheck import IngestPlan, plan_runs

__all__ = ["IngestPlan", "IngestSettings", "RunConfounds", "ingest_runs", "load_run_confounds", "plan_runs"]
