"""A planted network graph: sparse precision matrices between the networks' latent time courses.

With ``graph_density > 0`` the simulator draws the K latent network time courses of a run from
a Gaussian graphical model instead of the low-rank coupling factors of :mod:`.fmri`::

    Omega_group     sparse (K, K) precision: an edge between a fraction ``density`` of the pairs,
                    partial correlations 0.2 to 0.45 in size, 70 % positive
    Omega_subject   the group's edges, each weight moved by ``spread`` (same support, as the
                    group-sparse covariance model of Varoquaux et al. 2010 assumes)
    z_run           AR(1) in time, covariance inv(Omega_subject) across networks

The planted answers go to ``truth/graph.npz`` (:func:`write_planted_graph`): the group and
subject precisions and partial correlations, in truth label order (network ``i`` = label ``i + 1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.metrics.graphs import partial_from_precision

GRAPH_FILE = "graph.npz"
MIN_EIGENVALUE = 0.25
"""Smallest eigenvalue a planted precision is shifted to (keeps it well conditioned)."""


@dataclass
class PlantedGraph:
    """The planted network graph of a simulation.

    Attributes
    ----------
    group_precision : ndarray of shape (K, K)
    subject_precision : ndarray of shape (n_subjects, K, K)
    subjects : list of str
        Labels without ``sub-``, in the order of ``subject_precision``.
    """

    group_precision: np.ndarray
    subject_precision: np.ndarray
    subjects: list[str]

    @property
    def edges(self) -> np.ndarray:
        """Planted edges, bool (K, K), symmetric, False on the diagonal."""
        support = np.abs(self.group_precision) > 0
        np.fill_diagonal(support, False)
        return support

    def subject_partial(self, label: str) -> np.ndarray:
        """A subject's planted partial correlations, shape (K, K), 1 on the diagonal."""
        return partial_from_precision(self.subject_precision[self.subjects.index(label)])


def _well_conditioned(precision: np.ndarray) -> np.ndarray:
    """Shift the diagonal so the smallest eigenvalue is at least :data:`MIN_EIGENVALUE`."""
    low = float(np.linalg.eigvalsh(precision)[0])
    return precision + max(0.0, MIN_EIGENVALUE - low) * np.eye(precision.shape[0])


def planted_group_precision(n_networks: int, density: float, rng: np.random.Generator) -> np.ndarray:
    """A sparse group precision (K, K) with about ``density`` of the pairs connected.

    Every network gets at least one edge (a ring through a random order), so none is isolated.
    """
    k = int(n_networks)
    pairs = np.array(np.triu_indices(k, 1)).T
    n_edges = max(k, int(round(density * len(pairs))))
    order = rng.permutation(k)
    ring = {tuple(sorted((int(order[i]), int(order[(i + 1) % k])))) for i in range(k)} if k > 2 else {(0, 1)}
    rest = [tuple(p) for p in pairs[rng.permutation(len(pairs))] if tuple(p) not in ring]
    chosen = list(ring) + rest[:max(0, n_edges - len(ring))]
    precision = np.eye(k)
    for i, j in chosen:
        # Omega_ij < 0 is a positive partial correlation
        weight = rng.uniform(0.2, 0.45) * (-1.0 if rng.random() < 0.7 else 1.0)
        precision[i, j] = precision[j, i] = weight
    precision[np.diag_indices(k)] = 1.0 + np.abs(precision - np.eye(k)).sum(1) * 0.3
    return _well_conditioned(precision)


def subject_precision(group: np.ndarray, rng: np.random.Generator, spread: float = 0.08) -> np.ndarray:
    """A subject's precision: the group's edges, each weight moved by N(0, ``spread``), same support."""
    support = np.abs(group) > 0
    np.fill_diagonal(support, False)
    noise = np.triu(rng.normal(0.0, spread, group.shape), 1)
    precision = group + (noise + noise.T) * support
    return _well_conditioned(precision)


def covariance_factor(precision: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor L of ``inv(precision)``, scaled to unit variances: z = white @ L.T.

    Returns
    -------
    ndarray of float32, shape (K, K)
    """
    cov = np.linalg.inv(precision)
    d = np.sqrt(np.diag(cov))
    return np.linalg.cholesky(cov / np.outer(d, d)).astype(np.float32)


def write_planted_graph(truth_dir: Path, graph: PlantedGraph) -> Path:
    """Save the planted graph as ``truth_dir/graph.npz`` (atomically)."""
    path = Path(truth_dir) / GRAPH_FILE
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, group_precision=graph.group_precision, subject_precision=graph.subject_precision,
                            subjects=np.asarray(graph.subjects, dtype=str))
    return path


def load_planted_graph(truth_dir: Path) -> PlantedGraph | None:
    """The planted graph of a simulation, or None when it planted none."""
    path = Path(truth_dir) / GRAPH_FILE
    if not path.is_file():
        return None
    with np.load(path) as npz:
        return PlantedGraph(npz["group_precision"], npz["subject_precision"], [str(s) for s in npz["subjects"]])


__all__ = ["GRAPH_FILE", "PlantedGraph", "covariance_factor", "load_planted_graph",
           "planted_group_precision", "subject_precision", "write_planted_graph"]
