"""Synthetic cohorts with planted networks: fMRIPrep-style datasets and fingerprint stores."""

from .datasets import SimulatedDataset, simulate_dataset
from .plan import DEFAULT_FINGERPRINT_SNR, DEFAULT_SNR
from .stores import simulate_fingerprint_store
from .truth import Truth, load_truth, write_truth

__all__ = ["DEFAULT_FINGERPRINT_SNR", "DEFAULT_SNR", "SimulatedDataset", "Truth", "load_truth", "simulate_dataset",
           "simulate_fingerprint_store", "write_truth"]
