"""Spherical k-means that finds small networks: over-cluster, merge, refine.

Group-averaged fingerprints of K=17 networks trap plain k-means (even with k-means++ restarts)
in local optima that merge two small networks and split a large one; whole networks are then
missing from the group atlas and from every model initialised from it. Over-clustering first
(``overcluster * K`` clusters, which rarely merges real networks), then merging greedily the two
clusters whose union loses least of the k-means objective (agglomerative, Ward-like for the
cosine objective), and refining with Lloyd iterations reaches the best objective we found in
every restart on simulated cohorts, where restarts of plain k-means did not.

The spherical k-means objective is ``sum_n x_n . c_{y_n}``; with centres the normalised sums of
their points, a cluster contributes ``|S_c|`` (the norm of its point sum), so merging clusters
``i`` and ``j`` costs ``|S_i| + |S_j| - |S_i + S_j|``.
"""

from __future__ import annotations

import numpy as np
import torch


def spherical_kmeans(x: np.ndarray, n_clusters: int, seed: int = 0, n_init: int = 2, overcluster: int = 5,
                     max_iter: int = 100, n_components: int = 128) -> tuple[np.ndarray, np.ndarray, float]:
    """Spherical k-means with a deterministic network order.

    Each restart seeds ``overcluster * n_clusters`` centres by k-means++, runs Lloyd
    iterations, merges clusters greedily down to ``n_clusters`` (:func:`merge_clusters`) and
    refines. The best restart is kept; networks are sorted by decreasing size (ties by the
    centre's first coordinate), so a given seed gives the same networks in the same order.

    Parameters
    ----------
    x : ndarray of shape (n_points, D)
        Unit rows (zero rows are assigned but do not move centres).
    n_clusters : int
    seed : int
    n_init : int
        Restarts.
    overcluster : int
        Clusters before merging, as a multiple of ``n_clusters`` (1 = plain k-means++).
    max_iter : int
        Lloyd iterations of the refinement.
    n_components : int
        Principal coordinates used while over-clustering (the refinement uses every dimension).

    Returns
    -------
    labels : ndarray of int64, shape (n_points,)
    centres : ndarray of float32, shape (n_clusters, D)
        Unit vectors.
    objective : float
        Mean cosine between points and their centres.
    """
    rng = np.random.default_rng(seed)
    data = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    n_fine = min(max(1, int(overcluster)) * n_clusters, data.shape[0])
    coarse = principal_coordinates(data, n_components) if n_fine > n_clusters else data
    best, best_score = None, -np.inf
    for _ in range(max(1, int(n_init))):
        if n_fine > n_clusters:  # over-cluster and merge in principal coordinates, refine in full
            fine = lloyd(coarse, kmeanspp(coarse, n_fine, rng), 30)
            labels = (coarse @ fine.T).argmax(1)
            merged = merge_clusters(data, centres_of(data, labels, n_fine), n_clusters)
            centres = lloyd(data, merged, max_iter)
        else:
            centres = lloyd(data, kmeanspp(data, n_clusters, rng), max_iter)
        score = float((data @ centres.T).max(1).values.sum(dtype=torch.float64))
        if score > best_score:
            best, best_score = centres, score
    labels = (data @ best.T).argmax(1).numpy()
    sizes = np.bincount(labels, minlength=n_clusters)
    order = np.lexsort((best[:, 0].numpy(), -sizes))
    rank = np.empty(n_clusters, dtype=np.int64)
    rank[order] = np.arange(n_clusters)
    return rank[labels], best[order].numpy().astype(np.float32), best_score / max(1, data.shape[0])


def kmeanspp(data: torch.Tensor, k: int, rng: np.random.Generator) -> torch.Tensor:
    """k-means++ seeding for the cosine distance: ``k`` rows of ``data`` (k, D)."""
    n = data.shape[0]
    idx = [int(rng.integers(n))]
    dist = (1.0 - data @ data[idx[0]]).clamp_min(0.0).double()
    for _ in range(1, k):
        p = dist.numpy()
        total = p.sum()
        nxt = int(rng.choice(n, p=p / total)) if total > 0 else int(rng.integers(n))
        idx.append(nxt)
        dist = torch.minimum(dist, (1.0 - data @ data[nxt]).clamp_min(0.0).double())
    return data[idx].clone()


def principal_coordinates(data: torch.Tensor, n_components: int) -> torch.Tensor:
    """Coordinates of ``data`` (n_points, D) on its top principal axes through the origin (n_points, r).

    Dot products with centres in that span are kept, so clustering there is a cheap stand-in
    for clustering in full dimension; returns ``data`` itself when D <= ``n_components``.
    """
    if data.shape[1] <= n_components:
        return data
    _, vectors = torch.linalg.eigh((data.T @ data).double())  # (D, D): cheaper than an SVD of the data
    return data @ vectors[:, -n_components:].float()


def centres_of(data: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Normalised sums of the points of each of ``k`` clusters (k, D); zero rows for empty clusters."""
    sums = torch.zeros((k, data.shape[1]), dtype=data.dtype).index_add_(0, labels, data)
    return sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12)


def lloyd(data: torch.Tensor, centres: torch.Tensor, max_iter: int) -> torch.Tensor:
    """Lloyd iterations of spherical k-means; empty clusters are reseeded with the worst-fitting points.

    Parameters
    ----------
    data : Tensor of shape (n_points, D)
    centres : Tensor of shape (k, D)
        Unit starting centres.
    max_iter : int

    Returns
    -------
    Tensor of shape (k, D)
    """
    k = centres.shape[0]
    for _ in range(max_iter):
        score, labels = (data @ centres.T).max(1)
        sums = torch.zeros_like(centres).index_add_(0, labels, data)
        empty = torch.nonzero(torch.bincount(labels, minlength=k) == 0).ravel()
        if empty.numel():
            sums[empty] = data[torch.argsort(score)[:empty.numel()]]
        new = sums / sums.norm(dim=1, keepdim=True).clamp_min(1e-12)
        if torch.equal(new, centres) or torch.allclose(new, centres, atol=1e-7):
            return new
        centres = new
    return centres


def merge_clusters(data: torch.Tensor, centres: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """Merge clusters greedily, cheapest pair first, down to ``n_clusters`` centres (n_clusters, D).

    The cost of merging ``i`` and ``j`` is the drop of the objective,
    ``|S_i| + |S_j| - |S_i + S_j|`` with ``S_c`` the sum of the cluster's points.
    """
    labels = (data @ centres.T).argmax(1)
    sums = torch.zeros(centres.shape, dtype=torch.float64).index_add_(0, labels, data.double())
    alive = torch.nonzero(sums.norm(dim=1) > 0).ravel().tolist()
    gram = sums @ sums.T  # S_i . S_j; merges update it in place
    while len(alive) > n_clusters:
        g = gram[alive][:, alive]
        sq = g.diagonal()
        norms = sq.sqrt()
        cost = norms[:, None] + norms[None] - (sq[:, None] + sq[None] + 2 * g).clamp_min(0).sqrt()
        cost.fill_diagonal_(float("inf"))
        i, j = divmod(int(cost.argmin()), len(alive))
        a, b = alive[i], alive[j]
        sums[a] += sums[b]
        gram[a] += gram[b]
        gram[:, a] = gram[a]
        gram[a, a] = float(sums[a] @ sums[a])
        del alive[j]
    merged = sums[alive].float()
    if len(alive) < n_clusters:  # fewer non-empty clusters than asked: pad with the worst-fitting points
        merged = torch.cat([merged, data[torch.argsort((data @ centres.T).max(1).values)[:n_clusters - len(alive)]]])
    return merged / merged.norm(dim=1, keepdim=True).clamp_min(1e-12)


__all__ = ["spherical_kmeans", "kmeanspp", "lloyd", "merge_clusters", "principal_coordinates", "centres_of"]
