"""Closed-form baselines: group spherical k-means (Yeo 2011) and VB-EM of the MS-HBM (Kong 2019).

Both stream the fingerprint store one subject at a time, so memory does not grow with the
number of subjects beyond the outputs (``(S, N, K)`` label probabilities and a few ``(K, D)``
profiles per subject).

Demeaned fingerprints of D seeds live on the unit sphere of a (D - 1)-dimensional subspace,
so every vMF normaliser here uses ``dim = D - 1``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pavi_parcel.exceptions import BadInputError

from .clustering import spherical_kmeans
from .subject_data import FingerprintReader, SubjectData, SubjectReader
from .vmf import estimate_concentration, log_vmf_normalizer, mean_resultant_length, vmf_entropy

_MAX_CONCENTRATION = 1e8


@dataclass
class ParcellationResult:
    """Output of a parcellation method.

    Attributes
    ----------
    subject_probs : ndarray of float32, shape (n_subjects, n_vertices, K)
        q(y_{s,n} = l). May be a read-only broadcast view (group k-means).
    group_probs : ndarray of float32, shape (n_vertices, K)
        Group atlas (population label probabilities).
    group_profiles : ndarray of float32, shape (K, D)
        Group network profiles mu_l (unit vectors).
    trace : list of (float, float)
        (seconds since the start, objective) after every iteration.
    method : str
    extra : dict
        Method-specific outputs (concentrations, theta, per-subject profiles, ...).
    """

    subject_probs: np.ndarray
    group_probs: np.ndarray
    group_profiles: np.ndarray
    trace: list[tuple[float, float]] = field(default_factory=list)
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_networks(self) -> int:
        return int(self.group_probs.shape[1])

    def subject_labels(self) -> np.ndarray:
        """Most probable network per subject and vertex, shape (n_subjects, n_vertices)."""
        return np.asarray(self.subject_probs).argmax(-1)

    def group_labels(self) -> np.ndarray:
        """Most probable group network per vertex, shape (n_vertices,)."""
        return np.asarray(self.group_probs).argmax(-1)


def _check_networks(store: FingerprintReader, n_networks: int) -> None:
    if not 2 <= int(n_networks) <= store.n_vertices:
        raise BadInputError("Invalid number of networks", f"an integer from 2 to {store.n_vertices}",
                            str(n_networks), "set model.n_networks to e.g. 7 or 17")


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


# --------------------------------------------------------------------------- group clustering
def group_average_fingerprints(store: FingerprintReader, progress: bool = False) -> np.ndarray:
    """Average every vertex's fingerprints over subjects and sessions, renormalised.

    Returns
    -------
    ndarray of float32, shape (n_vertices, D)
        Demeaned unit rows (zero where no subject has data).
    """
    total = np.zeros((store.n_vertices, store.n_seeds), dtype=np.float64)
    subject = torch.empty((store.n_vertices, store.n_seeds), dtype=torch.float32)
    reader = SubjectReader(store, torch.device("cpu"))
    for s in tqdm(range(store.n_subjects), desc="group average", disable=not progress, leave=False):
        data = reader(s)
        subject.zero_()
        for t in range(store.n_sessions):  # sum_t x = sum_t (scale * bits - offset), in place
            if data.scale is None:
                subject.add_(data.bits[t])
            else:
                subject.addcmul_(data.bits[t].float(), data.scale[t][:, None]).sub_(data.offset[t][:, None])
        np.add(total, subject.numpy(), out=total)
    total -= total.mean(1, keepdims=True)
    return _unit_rows(total).astype(np.float32)


def fit_group_kmeans(store: FingerprintReader, n_networks: int, seed: int = 0, n_init: int = 2,
                     max_iter: int = 100, progress: bool = False) -> ParcellationResult:
    """Group clustering baseline (Yeo et al. 2011): spherical k-means on group-averaged fingerprints.

    Every subject receives the group parcellation. Soft group probabilities come from the vMF
    mixture matching the clustering: one E-step with the fitted concentration (mean resultant
    length of the clusters) and the cluster proportions.

    Parameters
    ----------
    store : FingerprintReader
    n_networks : int
    seed : int
    n_init, max_iter : int
        k-means restarts and iterations per restart.
    progress : bool

    Returns
    -------
    ParcellationResult
        ``subject_probs`` is a read-only broadcast of ``group_probs``; ``extra`` holds
        ``kappa`` (group-level concentration) and ``labels``.
    """
    _check_networks(store, n_networks)
    start = time.perf_counter()
    avg = group_average_fingerprints(store, progress)
    labels, centres, objective = spherical_kmeans(avg, n_networks, seed=seed, n_init=n_init, max_iter=max_iter)
    dim = store.n_seeds - 1
    has_data = np.linalg.norm(avg, axis=1) > 0
    kappa = float(estimate_concentration(min(max(objective * avg.shape[0] / max(has_data.sum(), 1), 0.0),
                                             1 - 1e-9), dim))
    kappa = min(kappa, _MAX_CONCENTRATION)
    weights = np.bincount(labels[has_data], minlength=n_networks) + 1.0
    logits = kappa * (avg.astype(np.float64) @ centres.T.astype(np.float64)) + np.log(weights / weights.sum())
    logits -= logits.max(1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(1, keepdims=True)
    probs = probs.astype(np.float32)
    return ParcellationResult(
        subject_probs=np.broadcast_to(probs, (store.n_subjects,) + probs.shape),
        group_probs=probs, group_profiles=centres.astype(np.float32),
        trace=[(time.perf_counter() - start, float(objective))], method="group_kmeans",
        extra={"kappa": kappa, "labels": labels, "mean_cosine": float(objective)})


# --------------------------------------------------------------------------- VB-EM
@dataclass
class _VbemState:
    """Variational and point parameters of the VB-EM (float64 except the label probabilities)."""

    lam: torch.Tensor        # (S, N, K) float32   q(y)
    m_nu: torch.Tensor       # (S, T, K, D)        q(nu) mean directions
    k_nu: torch.Tensor       # (S, T, K)           q(nu) concentrations
    m_psi: torch.Tensor      # (S, K, D)
    k_psi: torch.Tensor      # (S, K)
    mu: torch.Tensor         # (K, D)
    kappa: torch.Tensor      # ()
    sigma: torch.Tensor      # (K,)
    eps: torch.Tensor        # (K,)
    log_theta: torch.Tensor  # (N, K)


def _normalize(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    k = v.norm(dim=-1)
    return v / k.clamp_min(1e-300)[..., None], k


def _concentration(rbar: torch.Tensor, dim: float) -> torch.Tensor:
    return estimate_concentration(rbar.clamp(0.0, 1.0), dim).clamp(1e-6, _MAX_CONCENTRATION)


def _log_theta(counts: torch.Tensor, prior: float) -> torch.Tensor:
    theta = (counts + prior) / (counts + prior).sum(1, keepdim=True)
    return torch.log(theta.clamp_min(1e-12))


def _initialise(store: FingerprintReader, init: ParcellationResult, theta_prior: float,
                device: torch.device, progress: bool, pooled: bool = False) -> _VbemState:
    """Session and subject profiles from the initial labels; concentrations by moment matching."""
    S, T, N, D, K = store.n_subjects, store.n_sessions, store.n_vertices, store.n_seeds, init.n_networks
    dim = D - 1
    labels = torch.as_tensor(init.group_labels(), device=device)
    lam0 = torch.nn.functional.one_hot(labels, K).to(torch.float32)
    m_nu = torch.zeros(S, T, K, D, dtype=torch.float64, device=device)
    res_sum = torch.zeros((), dtype=torch.float64, device=device)
    n_valid = torch.zeros((), dtype=torch.float64, device=device)
    mask = torch.as_tensor(store.session_mask, device=device)
    reader = SubjectReader(store, device)
    for s in tqdm(range(S), desc="VB-EM init", disable=not progress, leave=False):
        data = reader(s)
        m_nu[s], norm = _normalize(data.weighted_sum(lam0))  # (T, K, D)
        res_sum += norm.sum()
        n_valid += data.valid.sum()
    kappa = _concentration(res_sum / n_valid.clamp_min(1), dim)
    m_psi, _ = _normalize((m_nu * mask[:, :, None, None]).sum(1))
    mu, mu_len = _normalize(m_psi.sum(0))
    cos_nu = ((m_nu * m_psi[:, None]).sum(-1) * mask[..., None]).sum((0, 1)) / mask.sum().clamp_min(1)
    if pooled:
        cos_nu, mu_len = cos_nu.mean().expand(K), mu_len.mean().expand(K)
    sigma = _concentration(cos_nu, dim)
    eps = _concentration(mu_len / S, dim)
    k_psi = (eps + sigma * T).expand(S, K).clone()
    k_nu = (kappa * lam0.sum(0).double() + sigma).expand(S, T, K).clone()
    log_theta = _log_theta(lam0.double().mul(S), theta_prior)
    return _VbemState(lam=lam0.expand(S, N, K).clone().cpu(), m_nu=m_nu, k_nu=k_nu, m_psi=m_psi,
                      k_psi=k_psi, mu=mu, kappa=kappa, sigma=sigma, eps=eps, log_theta=log_theta)


def _subject_step(data: SubjectData, ses_ok: torch.Tensor, s: int, st: _VbemState,
                  dim: float, n_inner: int) -> dict[str, torch.Tensor]:
    """Coordinate ascent on q(nu_s), q(psi_s), q(y_s); returns the subject's ELBO and statistics."""
    lam = st.lam[s].to(data.bits.device)
    okf = ses_ok.double()
    e_psi = mean_resultant_length(st.k_psi[s], dim)[:, None] * st.m_psi[s]
    for _ in range(n_inner):
        r = data.weighted_sum(lam)  # (T, K, D)
        m_nu, k_nu = _normalize(st.kappa * r + st.sigma[:, None] * e_psi)
        e_nu = mean_resultant_length(k_nu, dim)[..., None] * m_nu
        m_psi, k_psi = _normalize(st.eps[:, None] * st.mu + st.sigma[:, None] * (e_nu * okf[:, None, None]).sum(0))
        e_psi = mean_resultant_length(k_psi, dim)[:, None] * m_psi
        dots = data.dots(e_nu).sum(0, dtype=torch.float64)  # (N, K)
        log_lam = torch.log_softmax(st.log_theta + st.kappa * dots, dim=1)
        lam = log_lam.exp().float()
    st.m_nu[s], st.k_nu[s], st.m_psi[s], st.k_psi[s] = m_nu, k_nu, m_psi, k_psi
    st.lam[s] = lam.cpu()
    lam64 = lam.double()
    lik_dot = (lam64 * dots).sum()
    n_valid = data.valid.sum().double()
    nu_psi = (e_nu * e_psi).sum(-1)  # (T, K)
    elbo = (n_valid * log_vmf_normalizer(st.kappa, dim) + st.kappa * lik_dot
            + (lam64 * (st.log_theta - log_lam)).sum()
            + ((log_vmf_normalizer(st.sigma, dim) + st.sigma * nu_psi + vmf_entropy(k_nu, dim)) * okf[:, None]).sum()
            + (log_vmf_normalizer(st.eps, dim) + st.eps * (st.mu * e_psi).sum(-1) + vmf_entropy(k_psi, dim)).sum())
    return {"elbo": elbo, "lik_dot": lik_dot, "n_valid": n_valid, "e_psi": e_psi,
            "nu_psi": (nu_psi * okf[:, None]).sum(0), "n_ses": okf.sum(), "lam": lam64}


def fit_vbem(store: FingerprintReader, n_networks: int, seed: int = 0, max_iter: int = 50, tol: float = 1e-6,
             n_inner: int = 1, theta_prior: float = 1.0, init: ParcellationResult | None = None,
             device: str | torch.device = "cpu", progress: bool = False,
             callback: Callable[[int, float, float, np.ndarray], None] | None = None,
             pooled_concentrations: bool = False,
             on_state: Callable[[_VbemState], None] | None = None) -> ParcellationResult:
    """Variational Bayes EM of the multi-session hierarchical model (Kong et al. 2019).

    Closed-form coordinate ascent: q(y_{s,n}) categorical, q(nu_{s,t,l}) and q(psi_{s,l})
    vMF; point estimates of mu_l, theta_n (MAP under a symmetric Dirichlet with
    ``theta_prior`` pseudo-counts per network), kappa (shared), sigma_l and eps_l (per network)
    from their mean resultant lengths. Subjects are streamed from the store every iteration.

    Parameters
    ----------
    store : FingerprintReader
    n_networks : int
    seed : int
        Seed of the group k-means initialisation (used when ``init`` is None).
    max_iter : int, default 50
    tol : float, default 1e-6
        Stop when the objective improves by less than ``tol * |objective|``.
    n_inner : int, default 1
        Coordinate-ascent sweeps (nu, psi, y) per subject and iteration.
    theta_prior : float, default 1.0
        Dirichlet pseudo-count per network for the spatial prior theta_n (0 = maximum
        likelihood; then theta is floored at 1e-12).
    init : ParcellationResult, optional
        Initial labels (argmax of ``group_probs``); group k-means by default.
    device : str or torch.device
    progress : bool
    callback : callable, optional
        Called after every iteration's E-step as ``callback(iteration, seconds, objective,
        subject_probs)`` with the current (S, N, K) probabilities (a view; copy to keep);
        for accuracy-versus-time curves.
    pooled_concentrations : bool, default False
        One sigma and one eps for every network (the package's PAVI model) instead of one per
        network (Kong et al.); stored as (K,) tensors of equal values either way.
    on_state : callable, optional
        Called with the whole variational state (:class:`_VbemState`, not to be modified) after
        every iteration's E-step, before the M-step (the benchmark's common ELBO evaluator).

    Returns
    -------
    ParcellationResult
        ``trace`` holds (seconds, objective) after each iteration, where objective = ELBO +
        log Dirichlet prior of theta (up to a constant); non-decreasing. ``extra`` holds
        ``kappa``, ``sigma`` (K,), ``eps`` (K,), ``theta`` (N, K), ``subject_profiles``
        (S, K, D) = E[psi], ``session_profiles`` (S, T, K, D) = E[nu], ``n_iter`` and ``converged``.
    """
    _check_networks(store, n_networks)
    device = torch.device(device)
    start = time.perf_counter()
    if init is None:
        init = fit_group_kmeans(store, n_networks, seed=seed, progress=progress)
    dim = float(store.n_seeds - 1)
    st = _initialise(store, init, theta_prior, device, progress, pooled_concentrations)
    reader = SubjectReader(store, device)
    mask = torch.as_tensor(store.session_mask, device=device)
    S = store.n_subjects
    trace: list[tuple[float, float]] = []
    converged = False
    bar = tqdm(range(max_iter), desc="VB-EM", disable=not progress)
    for _ in bar:
        acc = {"elbo": 0.0, "lik_dot": 0.0, "n_valid": 0.0, "e_psi": 0.0, "nu_psi": 0.0, "n_ses": 0.0, "lam": 0.0}
        for s in range(S):
            out = _subject_step(reader(s), mask[s], s, st, dim, n_inner)
            for key in acc:
                acc[key] = acc[key] + out[key]
        objective = float(acc["elbo"] + theta_prior * st.log_theta.sum())
        trace.append((time.perf_counter() - start, objective))
        if callback is not None:
            callback(len(trace), trace[-1][0], objective, st.lam.numpy())
        if on_state is not None:
            on_state(st)
        bar.set_postfix(objective=f"{objective:.6g}")
        # M-step
        st.mu, mu_len = _normalize(acc["e_psi"])
        if pooled_concentrations:  # pooled resultant lengths, one value for every network
            st.eps = _concentration(mu_len.mean() / S, dim).expand(n_networks).clone()
            st.sigma = _concentration(acc["nu_psi"].sum() / (n_networks * acc["n_ses"].clamp_min(1)),
                                      dim).expand(n_networks).clone()
        else:
            st.eps = _concentration(mu_len / S, dim)
            st.sigma = _concentration(acc["nu_psi"] / acc["n_ses"].clamp_min(1), dim)
        st.kappa = _concentration(acc["lik_dot"] / acc["n_valid"].clamp_min(1), dim)
        st.log_theta = _log_theta(acc["lam"], theta_prior)
        if len(trace) > 1 and abs(trace[-1][1] - trace[-2][1]) < tol * abs(trace[-1][1]):
            converged = True
            break
    group = st.log_theta.exp().float().cpu().numpy()
    e_psi = (mean_resultant_length(st.k_psi, dim)[..., None] * st.m_psi).float().cpu().numpy()
    e_nu = (mean_resultant_length(st.k_nu, dim)[..., None] * st.m_nu).float().cpu().numpy()
    return ParcellationResult(
        subject_probs=st.lam.numpy(), group_probs=group, group_profiles=st.mu.float().cpu().numpy(),
        trace=trace, method="vbem",
        extra={"kappa": float(st.kappa), "sigma": st.sigma.cpu().numpy(), "eps": st.eps.cpu().numpy(),
               "theta": group, "subject_profiles": e_psi, "session_profiles": e_nu, "n_iter": len(trace),
               "converged": converged, "init": init.method})


__all__ = ["ParcellationResult", "fit_group_kmeans", "fit_vbem", "group_average_fingerprints"]
