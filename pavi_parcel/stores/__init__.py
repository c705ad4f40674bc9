"""HDF5 stores: cleaned time series per run, the cohort fingerprint store, the fitted posterior."""

from .fingerprints import FingerprintStore, FingerprintWriter
from .posterior import Posterior, read_posterior, write_posterior
from .timeseries import RunTimeSeries, read_run_timeseries, write_run_timeseries

__all__ = ["FingerprintStore", "FingerprintWriter", "Posterior", "RunTimeSeries", "read_posterior",
           "read_run_timeseries", "write_posterior", "write_run_timeseries"]
