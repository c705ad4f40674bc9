"""Geometry and network layouts of the simulator: where the planted networks are.

Spaces
------
``fsaverage5``: nilearn's offline fsaverage5 meshes (``load_fsaverage``); the modelled
vertices are the 18,715 cortical vertices of the Yeo 2011 atlas (its label 0 is the medial
wall); neighbours are mesh edges, within each hemisphere.
``MNI152NLin2009cAsym``: nilearn's offline MNI152 brain mask resampled to ``resolution_mm``
and cropped to the brain's bounding box (plus one voxel); every in-mask voxel is modelled
(the volume layout is procedural); neighbours are the 6 face neighbours.

Group layouts
-------------
``yeo``: the Yeo et al. (2011) 7- or 17-network atlas (surfaces only).
``procedural``: Voronoi cells of seed points spread by farthest-point sampling, per
hemisphere: on the fsaverage5 sphere (nearest seed in Euclidean distance on the sphere is
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

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from pavi_parcel.atlas.references import load_yeo
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.spaces import FsaverageSpace, Space, VolumeSpace
from pavi_parcel.spaces.meshes import sphere_coordinates

SURFACE_SPACES = ("fsaverage5",)
VOLUME_SPACES = ("MNI152NLin2009cAsym",)
FIELD_ITERATIONS = 25
"""Neighbour-averaging steps that make a white-noise field smooth (correlation length ~5 edges)."""
N_BASIS = 256
"""Smooth random fields precomputed once; per-subject fields are random mixtures of them."""
STREAM_GROUP, STREAM_LAYOUT, STREAM_SUBJECT, STREAM_SESSION, STREAM_RUN, STREAM_FP, STREAM_BANK = range(7)
"""Random streams: every draw uses ``rng_for(seed, STREAM_..., subject, session, run)``."""


def rng_for(seed: int, *keys: int) -> np.random.Generator:
    """Independent generator for one purpose and one subject / session / run."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


@dataclass
class SimSpace:
    """The modelled points of a space and their neighbourhood graph.

    Attributes
    ----------
    info : Space
    valid : ndarray of int64, shape (n_valid,)
        Full-space indices of the modelled vertices (cortex) or voxels (brain mask).
    coords : ndarray of float32, shape (n_valid, 3)
        Sphere coordinates (radius 100 mm) on surfaces, world millimetres on volumes.
    hemi : ndarray of int8, shape (n_valid,)
        0 = left, 1 = right.
    smoother : scipy.sparse.csr_matrix, shape (n_valid, n_valid)
        Row-stochastic neighbour averaging (self included); one step of diffusion.
    """

    info: Space
    valid: np.ndarray
    coords: np.ndarray
    hemi: np.ndarray
    smoother: sp.csr_matrix

    @property
    def n_valid(self) -> int:
        return int(self.valid.size)

    def smooth(self, values: np.ndarray, steps: int) -> np.ndarray:
        """Apply ``steps`` neighbour-averaging steps to ``values`` of shape (n_valid, ...)."""
        out = np.asarray(values, dtype=np.float32)
        for _ in range(steps):
            out = self.smoother @ out
        return out.astype(np.float32, copy=False)


def check_space(space: str) -> str:
    """Validate a simulator space name."""
    if space not in SURFACE_SPACES + VOLUME_SPACES:
        raise BadInputError(f"Unknown simulation space {space!r}", "fsaverage5 or MNI152NLin2009cAsym",
                            repr(space), "pass --space fsaverage5 or --space MNI152NLin2009cAsym")
    return space


@lru_cache(maxsize=4)
def build_space(space: str = "fsaverage5", resolution_mm: int = 4) -> SimSpace:
    """Load (offline) and cache the geometry of a simulation space.

    Parameters
    ----------
    space : {"fsaverage5", "MNI152NLin2009cAsym"}
    resolution_mm : int
        Voxel size of the volume grid in mm (ignored on surfaces).
    """
    check_space(space)
    return _surface_space() if space in SURFACE_SPACES else _volume_space(int(resolution_mm))


def _surface_space() -> SimSpace:
    space = FsaverageSpace("fsaverage5")
    sphere = sphere_coordinates(space.name)
    cortex = load_yeo(7).labels > 0
    coords = [100.0 * sphere[h.name] / np.linalg.norm(sphere[h.name], axis=1, keepdims=True)
              for h in space.hemispheres]
    edges_full = space.edges()
    valid = np.flatnonzero(cortex).astype(np.int64)
    edges = _adjacency(edges_full[:, 0], edges_full[:, 1], space.n_total)[valid][:, valid]
    hemi = (valid >= space.hemispheres[1].start).astype(np.int8)
    return SimSpace(space, valid, np.concatenate(coords)[valid].astype(np.float32), hemi, _smoother(edges))


def _volume_space(resolution_mm: int) -> SimSpace:
    from nilearn.datasets import load_mni152_brain_mask

    img = load_mni152_brain_mask(resolution=resolution_mm)
    mask = np.asarray(img.dataobj) > 0
    lo = np.maximum(np.argwhere(mask).min(axis=0) - 1, 0)          # crop to the brain, 1-voxel margin
    hi = np.argwhere(mask).max(axis=0) + 2
    mask = mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    affine = np.asarray(img.affine, dtype=np.float64).copy()
    affine[:3, 3] += affine[:3, :3] @ lo
    shape = mask.shape
    valid = np.flatnonzero(mask.ravel(order="C")).astype(np.int64)
    ijk = np.stack(np.unravel_index(valid, shape), axis=1)
    coords = (ijk @ affine[:3, :3].T + affine[:3, 3]).astype(np.float32)
    rows, cols = [], []
    for axis in range(3):
        step = np.zeros(3, dtype=np.int64)
        step[axis] = 1
        nb = ijk + step
        inside = nb[:, axis] < shape[axis]
        flat = np.ravel_multi_index(tuple(nb[inside].T), shape)
        rows.append(valid[inside])
        cols.append(flat)
    n_total = int(np.prod(shape))
    edges = _adjacency(np.concatenate(rows), np.concatenate(cols), n_total)[valid][:, valid]
    hemi = (coords[:, 0] >= 0).astype(np.int8)
    info = VolumeSpace("MNI152NLin2009cAsym", shape, affine)
    return SimSpace(info, valid, coords, hemi, _smoother(edges))


def _adjacency(rows: np.ndarray, cols: np.ndarray, n: int) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency from directed edge lists (duplicates merged)."""
    a = sp.coo_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n)).tocsr()
    a = a + a.T
    a.data[:] = 1.0
    return a.tocsr()


def _smoother(edges: sp.csr_matrix) -> sp.csr_matrix:
    a = edges + sp.identity(edges.shape[0], dtype=np.float32, format="csr")
    degree = np.asarray(a.sum(axis=1)).ravel()
    return (sp.diags(1.0 / degree).astype(np.float32) @ a).tocsr().astype(np.float32)


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
        if not sim.info.is_surface or n_networks not in (7, 17):
            raise BadInputError("The Yeo layout needs fsaverage5 and 7 or 17 networks",
                                "space fsaverage5 with n_networks 7 or 17",
                                f"space {sim.info.name} with {n_networks} networks",
                                "use layout='procedural' for other spaces or network counts")
        atlas = load_yeo(n_networks)
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
    """

    def __init__(self, sim: SimSpace, rng: np.random.Generator, n_basis: int = N_BASIS):
        white = rng.standard_normal((sim.n_valid, n_basis), dtype=np.float32)
        basis = sim.smooth(white, FIELD_ITERATIONS)
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
