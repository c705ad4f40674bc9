"""Simulated BOLD runs and fMRIPrep-style confounds (written to files by :mod:`.files`).

Signal model, in percent-signal-change units (one unit = ``PSC_UNIT`` of the baseline)::

    x(t, v) = s(t, v) + e(t, v) + physio(t, v) + global(t, v) + motion(t, v) + drift(t, v)
    s       = Z_run @ L_session.T                 networks: latent time courses Z (T, K) mixed by
                                                  loadings L (own network ~0.9, neighbours and a
                                                  weak smooth mixing of the others)
    Z_run   = F @ A_session.T + E                 coupled networks: shared factors F (T, r) with
                                                  loadings A (K, r), group -> subject -> session
                                                  (or, with a planted graph, AR(1) @ L.T with L L^T
                                                  the inverse of a sparse precision: :mod:`.graph`)
    e       = AR(1) noise, smoothed over neighbours, variance 1 / snr
    physio  = 2 slow physiological components, smooth spatial weights (in the WM / CSF signals)
    global  = one global fluctuation (in the global signal)
    motion  = smooth spatial mix of the 6 motion traces + a signal drop scaled by framewise
              displacement (large at spikes)
    drift   = slow linear and quadratic scanner drift

The stored intensity is ``baseline(v) * (1 + PSC_UNIT * x)``, with baseline 600 to 1,200;
the first ``n_dummy`` frames are brighter (non-steady state) and flagged in the confounds.
Points outside the model (medial wall, outside the brain mask) are exactly zero.

Direct fingerprints (:func:`subject_fingerprints`) skip the time series: the correlation of a
point with a seed is its network's coupling to the seed's network, plus a distance term, plus
low-rank noise, then binarised like real fingerprints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pavi_parcel.fingerprints.compute import binarize_top_fraction

from .geometry import SimSpace
from .layout import STREAM_FP, FieldBank, rng_for

PSC_UNIT = 0.005
"""Fraction of the baseline intensity per unit of simulated fluctuation."""
N_FACTORS = 3
NEAR_STEPS = 2  # neighbour-averaging steps that blur a subject's labels into its loadings
NOISE_STEPS = 2  # neighbour-averaging steps of the thermal noise, by default
TRANS_SCALE_MM = 0.3
ROT_SCALE_RAD = 0.004
HEAD_RADIUS_MM = 50.0
MOTION_COLUMNS = ("trans_x", "trans_y", "trans_z", "rot_x", "rot_y", "rot_z")
FP_SIGNAL = 0.5
FP_LOCAL = 0.3
FP_LOCAL_MM = 8.0
FP_FRAMES = 64
"""Rank of the correlation noise of one session (like a run of that many effective frames)."""


@dataclass
class SubjectModel:
    """Per-subject state shared by all of the subject's runs.

    Attributes
    ----------
    labels : ndarray of int16, shape (n_valid,)
    loadings : ndarray of float32, shape (n_valid, K)
    factors : ndarray of float32, shape (K, N_FACTORS)
    motion_level : float
        Multiplies motion amplitude and spike rate (log-normal across subjects).
    baseline : ndarray of float32, shape (n_valid,)
    weights : dict of str -> ndarray of float32
        Spatial weights of the nuisance components (physio, global, motion, fd, drift).
    """

    labels: np.ndarray
    loadings: np.ndarray
    factors: np.ndarray
    motion_level: float
    baseline: np.ndarray
    weights: dict[str, np.ndarray]


def group_factors(n_networks: int, rng: np.random.Generator) -> np.ndarray:
    """Group coupling factors A (K, r): network correlation ``corr(A A^T + I)``."""
    return (0.6 * rng.standard_normal((n_networks, N_FACTORS))).astype(np.float32)


def coupling(factors: np.ndarray) -> np.ndarray:
    """Network-network correlation matrix (K, K) implied by coupling factors."""
    cov = factors @ factors.T + np.eye(factors.shape[0], dtype=np.float32)
    d = np.sqrt(np.diag(cov))
    return (cov / np.outer(d, d)).astype(np.float32)


def signal_labels(sim: SimSpace, labels: np.ndarray) -> np.ndarray:
    """The network each vertex's noise-free loading points to: the labels the signal can show at best.

    Loadings blur the planted labels over :data:`NEAR_STEPS` neighbour steps: near a boundary a
    vertex may carry more of a neighbour's network than its own, which no method can recover.

    Parameters
    ----------
    sim : SimSpace
    labels : ndarray of int, shape (n_valid,)
        Planted labels 1..K.

    Returns
    -------
    ndarray of int16, shape (n_valid,)
        Labels 1..K.
    """
    return (sim.smooth(_one_hot(labels, int(labels.max())), NEAR_STEPS).argmax(axis=1) + 1).astype(np.int16)


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    """(n, k) float32 indicators of labels 1..k."""
    own = np.zeros((labels.size, k), dtype=np.float32)
    own[np.arange(labels.size), labels - 1] = 1.0
    return own


def make_subject(sim: SimSpace, bank: FieldBank, labels: np.ndarray, group_factor: np.ndarray,
                 rng: np.random.Generator, subject_spread: float = 0.25, mixing: float = 0.15) -> SubjectModel:
    """Draw a subject: loadings from its labels, coupling, motion level, nuisance weights.

    Parameters
    ----------
    sim : SimSpace
    bank : FieldBank
    labels : ndarray of int, shape (n_valid,)
        The subject's network labels 1..K.
    group_factor : ndarray of shape (K, N_FACTORS)
    rng : numpy.random.Generator
    subject_spread : float
        Standard deviation of the subject's coupling factors around the group's.
    mixing : float
        Amplitude of the weak, smooth between-network mixing.
    """
    k = group_factor.shape[0]
    own = _one_hot(labels, k)
    near = sim.smooth(own, NEAR_STEPS)          # partial signal from neighbouring networks
    strength = np.clip(0.9 + 0.1 * bank.draw(rng, 1), 0.6, 1.2)
    loadings = strength * near + mixing * np.abs(bank.draw(rng, k)) * (1.0 - own) / np.sqrt(k)
    factors = group_factor + subject_spread * rng.standard_normal(group_factor.shape).astype(np.float32)
    fields = bank.draw(rng, 13)
    weights = {
        "physio": 0.6 * fields[:, 0:2],
        "global": 0.5 + 0.15 * fields[:, 2],
        "motion": 2.0 * fields[:, 3:9],
        "fd": -(1.0 + 0.3 * fields[:, 9]),
        "drift": fields[:, 10:12],
    }
    baseline = (900.0 + 150.0 * np.clip(fields[:, 12], -2, 2)).astype(np.float32)
    return SubjectModel(labels.astype(np.int16), loadings.astype(np.float32), factors.astype(np.float32),
                        float(np.exp(0.5 * rng.standard_normal())), baseline, weights)


def session_factors(subject: SubjectModel, rng: np.random.Generator, spread: float = 0.1) -> np.ndarray:
    """A session's coupling factors: the subject's plus a small perturbation."""
    return (subject.factors + spread * rng.standard_normal(subject.factors.shape)).astype(np.float32)


# --------------------------------------------------------------------------- time series
def ar1(rng: np.random.Generator, shape: tuple[int, ...], phi: float, burn: int = 20) -> np.ndarray:
    """Unit-variance AR(1) series along axis 0, float32."""
    white = rng.standard_normal((shape[0] + burn,) + tuple(shape[1:]), dtype=np.float32)
    out = np.empty_like(white)
    out[0] = white[0]
    scale = np.float32(np.sqrt(1.0 - phi**2))
    for t in range(1, white.shape[0]):
        out[t] = phi * out[t - 1] + scale * white[t]
    return out[burn:]


def motion_parameters(rng: np.random.Generator, n_frames: int, level: float,
                      spike_rate: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    """Six rigid-body parameters (mm, rad): random walk plus sudden jerks.

    Returns
    -------
    params : ndarray of float32, shape (n_frames, 6)
    spikes : ndarray of int, shape (n_spikes,)
        Frames where a jerk happens.
    """
    steps = rng.standard_normal((n_frames, 6)) * level * np.array([0.02] * 3 + [0.0003] * 3)
    params = np.cumsum(steps, axis=0)
    n_spikes = rng.poisson(spike_rate * n_frames * level)
    spikes = np.sort(rng.choice(np.arange(3, n_frames), size=min(n_spikes, n_frames - 3), replace=False))
    for frame in spikes:
        jerk = rng.standard_normal(6) * np.array([0.3] * 3 + [0.003] * 3) * (0.5 + level)
        params[frame] += jerk                   # a jerk, then the head comes back
    return params.astype(np.float32), spikes


def framewise_displacement(params: np.ndarray) -> np.ndarray:
    """Power et al. (2012) FD (mm), first frame 0."""
    diff = np.abs(np.diff(params, axis=0))
    fd = diff[:, :3].sum(axis=1) + HEAD_RADIUS_MM * diff[:, 3:].sum(axis=1)
    return np.concatenate([[0.0], fd]).astype(np.float32)


@dataclass
class Run:
    """One simulated run: data over the modelled points and its confounds table."""

    data: np.ndarray            # (n_frames, n_valid) float32 intensities
    confounds: pd.DataFrame
    confounds_meta: dict
    networks: np.ndarray        # (n_frames, K) latent network time courses


def simulate_run(sim: SimSpace, subject: SubjectModel, factors: np.ndarray, n_frames: int, tr: float,
                 rng: np.random.Generator, snr: float, n_dummy: int = 2, motion_scale: float = 1.0,
                 network_factor: np.ndarray | None = None, parents: np.ndarray | None = None,
                 nesting_strength: float = 0.0, noise_smoothness: int = NOISE_STEPS) -> Run:
    """Generate one run (see the module docstring for the model).

    Parameters
    ----------
    sim : SimSpace
    subject : SubjectModel
    factors : ndarray of shape (K, N_FACTORS)
        The session's coupling factors.
    n_frames : int
        Volumes, including the ``n_dummy`` non-steady-state ones.
    tr : float
        Repetition time in seconds.
    rng : numpy.random.Generator
    snr : float
        Variance of the network signal over the variance of the thermal noise.
    n_dummy : int
    motion_scale : float
        0 removes motion (parameters and artefacts); 1 is the default amount.
    network_factor : ndarray of shape (K, K), optional
        Cholesky factor of a planted network covariance (:mod:`.graph`): the latent time courses
        are then ``AR(1) @ network_factor.T`` (a sparse graphical model) instead of the coupling factors.
    parents : ndarray of int, shape (K,), optional
        Planted coarse parent (0-based) of every network: networks of one parent share a parent
        time course of amplitude ``nesting_strength`` (planted nested scales).
    nesting_strength : float
    noise_smoothness : int
        Neighbour-averaging steps of the thermal noise: 0 = independent at every vertex, 2 = the
        default (noise shared by neighbours, as after resampling to the surface).
    """
    k = factors.shape[0]
    phi = float(np.exp(-tr / 4.0))                          # BOLD memory of about 4 s
    shared = ar1(rng, (n_frames, N_FACTORS), phi)
    unique = ar1(rng, (n_frames, k), phi)
    z = shared @ factors.T + unique if network_factor is None else unique @ network_factor.T
    if parents is not None and nesting_strength > 0:
        z += np.float32(nesting_strength) * ar1(rng, (n_frames, int(parents.max()) + 1), phi)[:, parents]
    z = (z - z.mean(0)) / z.std(0)
    x = z @ subject.loadings.T                                                # (T, n)
    x /= np.sqrt(np.mean(x.var(axis=0)))
    noise = ar1(rng, (n_frames, sim.n_valid), 0.3)                           # (T, n)
    noise = sim.smooth(np.ascontiguousarray(noise.T), noise_smoothness).T    # spatially smooth
    noise /= noise.std(axis=0, keepdims=True)
    x += noise * np.float32(1.0 / np.sqrt(snr))
    physio = ar1(rng, (n_frames, 2), float(np.exp(-tr / 8.0)))
    glob = ar1(rng, (n_frames, 1), phi)[:, 0]
    x += physio @ subject.weights["physio"].T + np.outer(glob, subject.weights["global"])
    level = subject.motion_level * motion_scale
    params, spikes = motion_parameters(rng, n_frames, max(level, 1e-12))
    if motion_scale == 0:
        params[:] = 0.0
    fd = framewise_displacement(params)
    scaled = (params - params.mean(0)) / np.array([TRANS_SCALE_MM] * 3 + [ROT_SCALE_RAD] * 3, dtype=np.float32)
    x += scaled @ subject.weights["motion"].T + np.outer(fd / TRANS_SCALE_MM, subject.weights["fd"])
    ramp = np.linspace(-1.0, 1.0, n_frames, dtype=np.float32)
    x += np.outer(ramp, subject.weights["drift"][:, 0]) + np.outer(ramp**2 - 1 / 3, subject.weights["drift"][:, 1])
    data = subject.baseline * (1.0 + PSC_UNIT * x)
    boost = 1.0 + 0.6 * np.exp(-np.arange(n_dummy) / 0.8)
    data[:n_dummy] *= boost[:, None].astype(np.float32)
    confounds, meta = confounds_table(data, params, fd, physio, glob, tr, n_dummy, rng)
    return Run(data.astype(np.float32), confounds, meta, z.astype(np.float32))


# --------------------------------------------------------------------------- confounds
def _with_expansions(name: str, values: np.ndarray) -> dict[str, np.ndarray]:
    deriv = np.concatenate([[np.nan], np.diff(values)])
    return {name: values, f"{name}_derivative1": deriv, f"{name}_power2": values**2,
            f"{name}_derivative1_power2": deriv**2}


def cosine_basis(n_frames: int, tr: float, period_cut: float = 128.0) -> np.ndarray:
    """fMRIPrep's discrete cosine drift regressors (without the constant), shape (T, n)."""
    order = int(np.floor(2 * n_frames * tr / period_cut))
    times = np.arange(n_frames)
    cols = [np.sqrt(2.0 / n_frames) * np.cos(np.pi / n_frames * (times + 0.5) * k) for k in range(1, order)]
    return np.stack(cols, axis=1) if cols else np.zeros((n_frames, 0))


def _components(rng: np.random.Generator, sources: np.ndarray, n: int, noise: float) -> tuple[np.ndarray, list]:
    """``n`` orthonormal components of noisy mixtures of ``sources`` (T, m) with SVD metadata."""
    mix = (sources @ rng.standard_normal((sources.shape[1], 2 * n))
           + noise * rng.standard_normal((sources.shape[0], 2 * n)))
    mix -= mix.mean(0)
    u, s, _ = np.linalg.svd(mix, full_matrices=False)
    var = s**2 / np.sum(s**2)
    return u[:, :n], [(float(s[i]), float(var[i]), float(np.sum(var[: i + 1]))) for i in range(n)]


def confounds_table(data: np.ndarray, params: np.ndarray, fd: np.ndarray, physio: np.ndarray,
                    glob: np.ndarray, tr: float, n_dummy: int,
                    rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """The ``desc-confounds_timeseries`` table and its JSON metadata, fMRIPrep >= 21 columns."""
    n_frames = data.shape[0]
    steady = 1.0 + 0.6 * np.exp(-np.arange(n_dummy) / 0.8)
    boost = np.ones(n_frames)
    boost[:n_dummy] = steady
    motion_mix = (params - params.mean(0)) / np.array([TRANS_SCALE_MM] * 3 + [ROT_SCALE_RAD] * 3)
    noise = rng.standard_normal((n_frames, 3))
    wm = 850.0 * boost * (1 + PSC_UNIT * (physio @ [0.8, 0.3] + 0.2 * glob + 0.1 * motion_mix[:, 0]
                                          + 0.1 * noise[:, 0]))
    csf = 1300.0 * boost * (1 + PSC_UNIT * (physio @ [0.4, 1.2] + 0.3 * glob + 0.2 * motion_mix[:, 2]
                                            + 0.1 * noise[:, 1]))
    gs = data.mean(axis=1, dtype=np.float64)
    cols: dict[str, np.ndarray] = {}
    cols.update(_with_expansions("global_signal", gs))
    cols.update(_with_expansions("csf", csf))
    cols.update(_with_expansions("white_matter", wm))
    cols["csf_wm"] = 0.5 * (wm + csf)
    cols["tcompcor"] = 1000.0 * boost * (1 + PSC_UNIT * (physio[:, 0] + noise[:, 2]))
    dvars = np.concatenate([[np.nan], np.sqrt(np.mean(np.diff(data, axis=0, n=1).astype(np.float64) ** 2, axis=1))])
    typical = np.nanmedian(dvars[n_dummy + 1:]) if n_frames > n_dummy + 2 else np.nanmedian(dvars)
    cols["std_dvars"] = dvars / typical
    cols["dvars"] = dvars
    cols["framewise_displacement"] = np.where(np.arange(n_frames) == 0, np.nan, fd)
    cols["rmsd"] = np.where(np.arange(n_frames) == 0, np.nan, fd / 3.0)
    meta: dict = {name: {"Method": "Mean"} for name in ("csf", "csf_wm", "global_signal", "tcompcor", "white_matter")}
    sources = np.column_stack([physio, motion_mix, glob])
    for prefix, n, method, mask in (("t_comp_cor", 3, "tCompCor", None), ("c_comp_cor", 3, "aCompCor", "CSF"),
                                    ("w_comp_cor", 4, "aCompCor", "WM"), ("a_comp_cor", 5, "aCompCor", "combined")):
        comps, info = _components(rng, sources, n, noise=2.0)
        for i in range(n):
            name = f"{prefix}_{i:02d}"
            cols[name] = comps[:, i]
            meta[name] = {"CumulativeVarianceExplained": info[i][2], "Method": method, "Retained": True,
                          "SingularValue": info[i][0], "VarianceExplained": info[i][1]}
            if mask is not None:
                meta[name]["Mask"] = mask
    for i, column in enumerate(cosine_basis(n_frames, tr).T):
        cols[f"cosine{i:02d}"] = column
    for i in range(n_dummy):
        cols[f"non_steady_state_outlier{i:02d}"] = (np.arange(n_frames) == i).astype(float)
    for j, name in enumerate(MOTION_COLUMNS):
        cols.update(_with_expansions(name, params[:, j].astype(np.float64)))
    outliers = np.flatnonzero((np.nan_to_num(cols["framewise_displacement"]) > 0.5)
                              | (np.nan_to_num(cols["std_dvars"]) > 1.5))
    for i, frame in enumerate(outliers[outliers >= n_dummy]):
        cols[f"motion_outlier{i:02d}"] = (np.arange(n_frames) == frame).astype(float)
    return pd.DataFrame(cols), meta


# --------------------------------------------------------------------------- direct fingerprints
def subject_fingerprints(subject: int, sessions: list[int], labels: np.ndarray, strength: np.ndarray,
                          couplings: list[np.ndarray], seed_pos: np.ndarray, local: np.ndarray, sigma: float,
                          top_fraction: float, seed: int) -> tuple[int, list[tuple[int, np.ndarray]]]:
    """Fingerprints of one subject's sessions: profile + local term + finite-frames noise, binarised.

    The noise of a session is ``sigma * W @ U / sqrt(FP_FRAMES)`` with W (n, FP_FRAMES) and
    U (FP_FRAMES, D) Gaussian: like correlations estimated from a finite run, every row lives in
    a FP_FRAMES-dimensional subspace shared by the session's vertices.

    Parameters
    ----------
    subject : int
        Subject row (also selects the random stream).
    sessions : list of int
        Session columns to compute.
    labels : ndarray of int, shape (n_valid,)
        The subject's labels 1..K.
    strength : ndarray of float32, shape (n_valid,)
        Loading of every point on its own network.
    couplings : list of ndarray of shape (K, K)
        Network correlation of each session in ``sessions``.
    seed_pos : ndarray of int, shape (D,)
        Seed positions among the modelled points.
    local : ndarray of float32, shape (n_valid, D)
        Distance term (:func:`local_kernel`).
    sigma : float
        Noise standard deviation.
    top_fraction : float
        Binarisation fraction; 0 returns the continuous correlations.
    seed : int

    Returns
    -------
    subject : int
    entries : list of (int, ndarray)
        Session column and its fingerprints, uint8 (n_valid, ceil(D / 8)) when binarised.
    """

    k, n = couplings[0].shape[0], labels.size
    left = np.zeros((n, FP_FRAMES + k), dtype=np.float32)      # [W | a_v * FP_SIGNAL * onehot]
    left[np.arange(n), FP_FRAMES + labels - 1] = FP_SIGNAL * strength
    seed_labels = labels[seed_pos] - 1
    out = []
    for j, c in zip(sessions, couplings):
        rng = rng_for(seed, STREAM_FP, subject, j)
        left[:, :FP_FRAMES] = rng.standard_normal((n, FP_FRAMES), dtype=np.float32)
        right = np.empty((FP_FRAMES + k, seed_pos.size), dtype=np.float32)       # [U ; C_st[:, seeds]]
        right[:FP_FRAMES] = rng.standard_normal((FP_FRAMES, seed_pos.size), dtype=np.float32)
        right[:FP_FRAMES] *= np.float32(sigma / np.sqrt(FP_FRAMES))
        right[FP_FRAMES:] = c[:, seed_labels]
        corr = left @ right
        corr += local
        out.append((j, binarize_top_fraction(corr, top_fraction) if top_fraction > 0 else corr))
    return subject, out


def local_kernel(sim: SimSpace, seed_pos: np.ndarray) -> np.ndarray:
    """``FP_LOCAL * exp(-d^2 / (2 l^2))`` between every point and every seed, same hemisphere; (n, D)."""
    from scipy.spatial import cKDTree

    kernel = np.zeros((sim.n_valid, seed_pos.size), dtype=np.float32)
    tree = cKDTree(sim.coords[seed_pos])
    pairs = tree.sparse_distance_matrix(cKDTree(sim.coords), 3.0 * FP_LOCAL_MM, output_type="coo_matrix")
    same = sim.hemi[seed_pos[pairs.row]] == sim.hemi[pairs.col]
    kernel[pairs.col[same], pairs.row[same]] = FP_LOCAL * np.exp(-pairs.data[same] ** 2 / (2 * FP_LOCAL_MM**2))
    kernel[seed_pos, np.arange(seed_pos.size)] = FP_LOCAL      # zero distances are not listed
    return kernel
