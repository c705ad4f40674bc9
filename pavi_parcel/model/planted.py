"""Datasets sampled from the MS-HBM itself (:mod:`.hierarchy`) on a 2-D grid, with their truth.

Tests use them to check that a fit recovers what was planted; the realistic simulators of the
benchmarks are :mod:`pavi_parcel.simulate` (fingerprints) and :mod:`pavi_parcel.simulate.fmri` (BOLD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .vmf import sample_vmf


@dataclass
class PlantedData:
    """A dataset sampled from the generative model, with its truth.

    Attributes
    ----------
    x : ndarray of float32, shape (S, T, N, D)
        Demeaned unit fingerprints.
    labels : ndarray of int, shape (S, N)
        Planted individual labels.
    group_labels : ndarray of int, shape (N,)
    mu : ndarray of shape (K, D)
    grid_shape : tuple of int
        (H, W, 1): vertices are the pixels of a grid in C order.
    """

    x: np.ndarray
    labels: np.ndarray
    group_labels: np.ndarray
    mu: np.ndarray
    grid_shape: tuple[int, int, int]


def _smooth_fields(rng: np.random.Generator, n: int, shape: tuple[int, int], width: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    fields = rng.standard_normal((n,) + shape)
    fields = np.stack([gaussian_filter(f, width, mode="wrap") for f in fields])
    return fields / fields.reshape(n, -1).std(1)[:, None, None]


def sample_dataset(n_subjects: int, n_sessions: int, n_networks: int, grid: tuple[int, int] = (24, 24),
                   n_seeds: int = 64, kappa: float = 60.0, eps: float = 200.0, sigma: float = 400.0,
                   smoothness: float = 2.5, deviation: float = 0.5, seed: int = 0) -> PlantedData:
    """Sample fingerprints and labels from the MS-HBM on a 2-D grid of vertices.

    Parameters
    ----------
    n_subjects, n_sessions, n_networks : int
    grid : (int, int)
        Grid of ``H * W`` vertices; labels are spatially smooth on it.
    n_seeds : int
        Fingerprint length D (vMFs live on the sphere of dimension D - 1).
    kappa, eps, sigma : float
        Data, subject and session concentrations.
    smoothness : float
        Width (pixels) of the Gaussian filter that makes label fields smooth.
    deviation : float
        Amplitude of each subject's smooth field added to the group's before the argmax
        (0 = every subject has the group labels).
    seed : int

    Returns
    -------
    PlantedData
    """
    from scipy.linalg import helmert

    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    shape = tuple(grid)
    n_vert = shape[0] * shape[1]
    group_fields = _smooth_fields(rng, n_networks, shape, smoothness)
    group = group_fields.reshape(n_networks, -1).argmax(0)
    labels = np.stack([(group_fields + deviation * _smooth_fields(rng, n_networks, shape, smoothness))
                       .reshape(n_networks, -1).argmax(0) for _ in range(n_subjects)])
    basis = torch.as_tensor(helmert(n_seeds), dtype=torch.float64)  # (D-1, D), rows orthonormal, _|_ 1
    p = n_seeds - 1
    mu = torch.randn(n_networks, p, generator=gen, dtype=torch.float64)
    mu = mu / mu.norm(dim=-1, keepdim=True)
    x = np.zeros((n_subjects, n_sessions, n_vert, n_seeds), dtype=np.float32)
    for s in range(n_subjects):
        psi = sample_vmf(mu, eps, 1, generator=gen)[0]
        lab = torch.as_tensor(labels[s])
        for t in range(n_sessions):
            nu = sample_vmf(psi, sigma, 1, generator=gen)[0]
            z = sample_vmf(nu[lab], kappa, 1, generator=gen)[0]  # (N, D-1)
            x[s, t] = (z @ basis).numpy().astype(np.float32)
    return PlantedData(x=x, labels=labels, group_labels=group, mu=(mu @ basis).numpy().astype(np.float32),
                       grid_shape=(shape[0], shape[1], 1))




__all__ = ["PlantedData", "sample_dataset"]
