"""Network layouts of the simulator: where the planted networks are (the spaces: :mod:`.geometry`).

Group layouts
-------------
``yeo``: the Yeo et al. (2011) 7- or 17-network atlas (fsaverage5 and fsLR).
``procedural``: Voronoi cells of seed points spread by farthest-point sampling, per
hemisphere: on the surface's sphere (nearest seed in Euclidean distance on the sphere is
the nearest in great-circle distance, so the cells are geodesic Voronoi cells), in world
coordinates for volumes (hemispheres split at x = 0). Each network gets
``cells_per_hemisphere`` cells in each hemisphere, assigned at random, so networks are
distributed like real ones.

Subject layouts
---------------
Label competition: every network scores ``smooth(one-hot(group)) + a * F_l`` at every
vertex, with ``F_l`` a smooth random field (unit variance, correlation length of a few
neighbours), plus islands: discs where another network wins outright. The subject label is
the best-scoring network. The amplitude ``a`` is found by bisection so that the fraction of
vertices whose label differs from the group is ``deviation``.

The planted answers are stored by :mod:`pavi_parcel.simulate.truth`.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from pavi_parcel.atlas.references import load_yeo
from pavi_parcel.exceptions import BadInputError

from .geometry import YEO_SPACES, SimSpace

FIELD_ITERATIONS = 25
"""Neighbour-averaging steps that make a white-noise field smooth (correlation length ~5 edges)."""
N_BASIS = 256
"""Smooth random fields precomputed once; per-subject fields are random mixtures of them."""
STREAM_GROUP, STREAM_LAYOUT, STREAM_SUBJECT, STREAM_SESSION, STREAM_RUN, STREAM_FP, STREAM_BANK, STREAM_GRAPH = range(8)
"""Random streams: every draw uses ``rng_for(seed, STREAM_..., subject, session, run)``."""


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """Independent generator for one purpose and one subject / session / run."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


# --------------------------------------------------------------------------- group layouts
def group_layout(sim: SimSpace, layout: str, n_networks: int, rng: np.random.Generator,
                 cells_per_hemisphere: int = 2) -> tuple[np.ndarray, list[str]]:
    """Group network labels of the modelled points.

    Parameters
    ----------
    sim : SimSpace
    layout : {"yeo", "procedural"}
    n_networks : int
    rng : numpy.random.Generator
    cells_per_hemisphere : int
        Procedural layout: Voronoi cells per network and hemisphere.

    Returns
    -------
    labels : ndarray of int16, shape (n_valid,)
        Values 1..K.
    names : list of str
    """
    if layout == "yeo":
        if sim.info.name not in YEO_SPACES or n_networks not in (7, 17):
            raise BadInputError("The Yeo layout needs fsaverage5 or fsLR and 7 or 17 networks",
                                "space fsaverage5 or fsLR with n_networks 7 or 17",
                                f"space {sim.info.name} with {n_networks} networks",
                                "use layout='procedural' for other spaces or network counts")
        atlas = load_yeo(n_networks, sim.info)
        return atlas.labels[sim.valid].astype(np.int16), list(atlas.names)
    if layout != "procedural":
        raise BadInputError(f"Unknown layout {layout!r}", "yeo or procedural", repr(layout),
                            "pass layout='yeo' or layout='procedural'")
    if n_networks < 2:
        raise BadInputError("Too few networks", "at least 2", str(n_networks), "raise n_networks")
    labels = np.zeros(sim.n_valid, dtype=np.int16)
    for h in (0, 1):
        idx = np.flatnonzero(sim.hemi == h)
        n_cells = n_networks * cells_per_hemisphere
        seeds = _farthest_points(sim.coords[idx], n_cells, rng)
        owner = cKDTree(sim.coords[idx][seeds]).query(sim.coords[idx])[1]
        networks = rng.permutation(np.repeat(np.arange(1, n_networks + 1), cells_per_hemisphere))
        labels[idx] = networks[owner]
    return labels, [f"Network{k:02d}" for k in range(1, n_networks + 1)]


def _farthest_points(coords: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` well-spread points (greedy farthest-point sampling, random start)."""
    chosen = [int(rng.integers(coords.shape[0]))]
    dist = np.linalg.norm(coords - coords[chosen[0]], axis=1)
    for _ in range(1, min(n, coords.shape[0])):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(coords - coords[nxt], axis=1))
    return np.asarray(chosen)


# --------------------------------------------------------------------------- smooth fields
class FieldBank:
    """Smooth random fields drawn as random mixtures of a precomputed smooth basis.

    Parameters
    ----------
    sim : SimSpace
    rng : numpy.random.Generator
        Draws the basis (once).
    n_basis : int
    iterations : int
        Neighbour-averaging steps of the white noise: 0 = no spatial structure, 25 (the
        default) = a correlation length of about 5 edges, 100 = coarse.
    """

    def __init__(self, sim: SimSpace, rng: np.random.Generator, n_basis: int = N_BASIS,
                 iterations: int = FIELD_ITERATIONS):
        white = rng.standard_normal((sim.n_valid, n_basis), dtype=np.float32)
        basis = sim.smooth(white, iterations) if iterations > 0 else white
        basis -= basis.mean(axis=0)
        basis /= basis.std(axis=0) * np.sqrt(n_basis)
        self.basis = basis.astype(np.float32)

    def draw(self, rng: np.random.Generator, n_fields: int) -> np.ndarray:
        """ndarray of float32, shape (n_valid, n_fields): smooth, zero-mean, unit variance."""
        coef = rng.standard_normal((self.basis.shape[1], n_fields), dtype=np.float32)
        field = self.basis @ coef
        field -= field.mean(axis=0)
        field /= np.maximum(field.std(axis=0), 1e-6)
        return field


# --------------------------------------------------------------------------- subject layouts
class SubjectLayouts:
    """Draw subject label maps that deviate from the group by a controlled fraction.

    Parameters
    ----------
    sim : SimSpace
    group : ndarray of int, shape (n_valid,)
        Group labels 1..K.
    n_networks : int
    bank : FieldBank
    boundary_steps : int
        Smoothing steps of the group one-hot scores (how soft boundaries are).
    """

    def __init__(self, sim: SimSpace, group: np.ndarray, n_networks: int, bank: FieldBank,
                 boundary_steps: int = 3):
        self.sim, self.group, self.k, self.bank = sim, np.asarray(group), n_networks, bank
        onehot = np.zeros((sim.n_valid, n_networks), dtype=np.float32)
        onehot[np.arange(sim.n_valid), self.group - 1] = 1.0
        self.base = sim.smooth(onehot, boundary_steps)
        self.tree = cKDTree(sim.coords)

    def draw(self, rng: np.random.Generator, deviation: float, n_islands: int = 5,
             island_radius_mm: float = 12.0) -> tuple[np.ndarray, float]:
        """One subject's labels.

        Parameters
        ----------
        rng : numpy.random.Generator
        deviation : float
            Target fraction of modelled points whose label differs from the group.
        n_islands : int
            Discs taken over by another network (part of the deviation).
        island_radius_mm : float

        Returns
        -------
        labels : ndarray of int16, shape (n_valid,)
        fraction : float
            Achieved fraction of points that differ from the group.
        """
        score = self.base.copy()
        for _ in range(n_islands):
            centre = int(rng.integers(self.sim.n_valid))
            disc = np.asarray(self.tree.query_ball_point(self.sim.coords[centre], island_radius_mm))
            disc = disc[self.sim.hemi[disc] == self.sim.hemi[centre]]
            others = np.setdiff1d(np.arange(1, self.k + 1), [self.group[centre]])
            score[disc, rng.choice(others) - 1] += 2.0
        field = self.bank.draw(rng, self.k)
        lo, hi = 0.0, 4.0
        labels = _argmax_labels(score)
        if np.mean(labels != self.group) < deviation:
            for _ in range(18):
                mid = 0.5 * (lo + hi)
                labels = _argmax_labels(score + mid * field)
                if np.mean(labels != self.group) < deviation:
                    lo = mid
                else:
                    hi = mid
            labels = _argmax_labels(score + 0.5 * (lo + hi) * field)
        return labels, float(np.mean(labels != self.group))


def _argmax_labels(score: np.ndarray) -> np.ndarray:
    return (np.argmax(score, axis=1) + 1).astype(np.int16)
