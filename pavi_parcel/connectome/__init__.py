"""Network time series and connectomes from the individual maps: correlations, group-sparse partial correlations."""

from .estimate import CohortConnectomes, group_sparse_connectomes
from .stage import connectome_stage

__all__ = ["CohortConnectomes", "connectome_stage", "group_sparse_connectomes"]
