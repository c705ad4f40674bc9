"""Synthetic cohorts with planted networks: fMRIPrep-style datasets and fingerprint stores."""

from .datasets import SimulatedDataset, simulate_dataset, simulate_fingerprint_store
from .truth import Truth, load_truth, write_truth

__all__ = ["SimulatedDataset", "Truth", "load_truth", "simulate_dataset", "simulate_fingerprint_store", "write_truth"]
