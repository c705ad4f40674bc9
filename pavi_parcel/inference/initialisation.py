"""The starting point every method shares: group k-means profiles, moment concentrations, patches."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from pavi_parcel.atlas.priors import initial_profiles, prior_for_store
from pavi_parcel.model.clustering import spherical_kmeans
from pavi_parcel.model.guide import InitState
from pavi_parcel.model.hierarchy import moment_concentrations, project_sphere
from pavi_parcel.settings.schema import FitSettings, ModelSettings

from .stream import FingerprintSource, make_patches


def initialise(source: FingerprintSource, model: ModelSettings, fit: FitSettings, seed: int) -> InitState:
    """Group k-means profiles, concentrations by moments, patches: the start of every method.

    The group-averaged fingerprints of up to ``init_subjects`` subjects (drawn with ``seed``) are
    clustered by spherical k-means (networks sorted by size, so the order is deterministic);
    concentrations marked ``auto`` come from :func:`moment_concentrations` under that labelling.
    With an atlas prior (``model.prior``) there is no k-means: the labels are the atlas's, in
    atlas order, and each profile is the normalised group average within its atlas network.
    """
    store = source.store
    rng = np.random.default_rng(seed)
    n_init = min(store.n_subjects, fit.init_subjects)
    chosen = np.sort(rng.choice(store.n_subjects, n_init, replace=False))
    k_net, n_vert, d = model.n_networks, store.n_vertices, store.n_seeds
    atlas = prior_for_store(model, store)  # None without model.prior
    xbar = np.zeros((n_vert, d), dtype=np.float32)
    blocks = make_patches(n_vert, 4096)
    for s in tqdm(chosen, desc="init: group average", leave=False):
        for a, b in blocks:
            xbar[a:b] += source.rows(int(s), a, b).sum(0)
    xbar = project_sphere(torch.from_numpy(xbar)).numpy()
    if atlas is None:
        labels, mu, _ = spherical_kmeans(xbar, k_net, seed=int(rng.integers(2**31)))
    else:
        labels, mu = initial_profiles(xbar, atlas.probs)
    onehot = np.eye(k_net, dtype=np.float32)[labels]
    sums = np.zeros((n_init, store.n_sessions, k_net, d), dtype=np.float64)
    dots, n_dots = 0.0, 0
    for i, s in enumerate(chosen):
        for a, b in blocks:
            x = source.rows(int(s), a, b)  # (T, V, D)
            block = np.matmul(onehot[a:b].T, x)  # (T, K, D): per-network sums, one BLAS call per session
            sums[i] += block
            dots += float(np.sum(block * mu[None]))  # sum over vertices of x . mu_label, from the sums
        n_dots += int(store.session_mask[s].sum()) * n_vert
    dim = float(d - 1)
    counts = np.bincount(labels, minlength=k_net)
    est = moment_concentrations(sums, counts, dim, store.session_mask[chosen])
    conc = {}
    for name, fallback in (("kappa", None), ("sigma", 50.0), ("eps", 50.0)):
        value = getattr(model, f"{name}_init")
        if str(value) == "auto":
            value = est[name] if est[name] is not None else (fallback or 1.0) * est["kappa"]
        conc[name] = float(value)
    return InitState(mu=mu, group_labels=labels, concentrations=conc, rho=max(dots / max(n_dots, 1), 1e-3),
                     patches=make_patches(n_vert, fit.batch_vertices), dim=dim,
                     prior=None if atlas is None else atlas.probs)


__all__ = ["initialise"]
