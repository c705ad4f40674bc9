"""The multi-session hierarchical model (MS-HBM, Kong et al. 2019): its ELBO terms.

A sampler of the model, for tests, is in :mod:`.planted`.

Generative model (plates: subjects s, sessions t, vertices n, networks l = 1..K)::

    mu_l                 group network profile              uniform on the sphere
    psi_{s,l}  ~ vMF(mu_l, eps)                             subject profile
    nu_{s,t,l} ~ vMF(psi_{s,l}, sigma)                      session profile
    theta_n    ~ Dirichlet(alpha)                           group spatial prior of vertex n
    y_{s,n}    ~ Cat(theta_n)  [x Potts(beta) over neighbours]
    x_{s,t,n} | y_{s,n} = l ~ vMF(nu_{s,t,l}, kappa)

Fingerprints are demeaned unit vectors of R^D, so every vMF lives on the unit sphere of the
(D - 1)-dimensional subspace orthogonal to the all-ones vector: normalisers use ``dim = D - 1``.

Variational factors shared by every inference method of the package::

    q(psi_{s,l})   = vMF(m_psi, k_psi)        q(nu_{s,t,l}) = vMF(m_nu, k_nu)
    q(y_{s,n})     = Cat(lambda_{s,n})        q(theta_n)    = Dirichlet(beta_n)

mu and the concentrations (kappa, sigma, eps) are point estimates. The ELBO is split into terms
living in plates; :class:`PlateScale` holds the one rule that scales a minibatch term by
(plate size / batch size) for every subsampled plate it lives in, so minibatch ELBOs are
unbiased estimates of the full ELBO.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .vmf import estimate_concentration, log_vmf_normalizer, mean_resultant_length


# --------------------------------------------------------------------------- geometry
def project_sphere(v: torch.Tensor) -> torch.Tensor:
    """Demean along the last axis and scale to unit norm (the sphere of the demeaned subspace)."""
    v = v - v.mean(-1, keepdim=True)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def split_natural(eta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """vMF natural parameter ``k m`` -> (mean direction m, concentration k)."""
    k = eta.norm(dim=-1)
    return eta / k.clamp_min(1e-12)[..., None], k


def binary_fingerprint_scale(ones: torch.Tensor, n_seeds: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of binarised fingerprints: ``x = scale * (b - ones / D)`` is demeaned, unit-norm.

    Parameters
    ----------
    ones : Tensor of float, any shape
        Number of ones of each packed fingerprint.
    n_seeds : int
        D.

    Returns
    -------
    scale : Tensor, same shape
        ``1 / sqrt(m - m^2 / D)``; 0 for a fingerprint without data.
    valid : Tensor of bool, same shape
        True where the fingerprint holds data.
    """
    norm = torch.sqrt((ones - ones * ones / n_seeds).clamp_min(0.0))
    valid = norm > 0
    return torch.where(valid, 1.0 / norm.clamp_min(1e-12), torch.zeros_like(norm)), valid


@dataclass
class SubjectPosterior:
    """Variational vMF factors of a batch of subjects.

    Attributes
    ----------
    m_psi : Tensor of shape (B, K, D)
    k_psi : Tensor of shape (B, K)
    m_nu : Tensor of shape (B, T, K, D)
    k_nu : Tensor of shape (B, T, K)
    dim : float
        Sphere dimension ``D - 1`` used in the normalisers.
    a_psi, a_nu : Tensor, optional
        Mean resultant lengths A(k_psi), A(k_nu), computed on first use when not given.
    """

    m_psi: torch.Tensor
    k_psi: torch.Tensor
    m_nu: torch.Tensor
    k_nu: torch.Tensor
    dim: float
    a_psi: torch.Tensor | None = None
    a_nu: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.a_psi is None or self.a_nu is None:
            a = mean_resultant_length(torch.cat([self.k_psi.reshape(-1), self.k_nu.reshape(-1)]), self.dim)
            self.a_psi = a[:self.k_psi.numel()].reshape(self.k_psi.shape)
            self.a_nu = a[self.k_psi.numel():].reshape(self.k_nu.shape)

    @property
    def e_psi(self) -> torch.Tensor:
        """E[psi] = A(k_psi) m_psi, shape (B, K, D)."""
        return self.a_psi[..., None] * self.m_psi

    @property
    def e_nu(self) -> torch.Tensor:
        """E[nu] = A(k_nu) m_nu, shape (B, T, K, D)."""
        return self.a_nu[..., None] * self.m_nu

    def detach(self) -> SubjectPosterior:
        return SubjectPosterior(*(t.detach() for t in (self.m_psi, self.k_psi, self.m_nu, self.k_nu)), self.dim,
                                self.a_psi.detach(), self.a_nu.detach())


@dataclass
class Concentrations:
    """Point estimates kappa (data), sigma (session), eps (subject), as tensors (scalars or (K,))."""

    kappa: torch.Tensor
    sigma: torch.Tensor
    eps: torch.Tensor


# --------------------------------------------------------------------------- plate scaling
@dataclass(frozen=True)
class PlateScale:
    """Subsample scaling of minibatch terms, in one place (as Pyro's ``subsample`` scale).

    A term summed over the subjects of the batch is multiplied by ``subject``; over the vertices
    of the batch by ``vertex``; over both by their product. Vertex batches are patches of a fixed
    partition drawn uniformly, so the vertex scale is the number of patches.

    Attributes
    ----------
    subject : float
        n_subjects / batch_subjects (1 for a full pass).
    vertex : float
        n_patches (1 for a full pass).
    """

    subject: float = 1.0
    vertex: float = 1.0

    def __call__(self, subjects: bool, vertices: bool) -> float:
        return (self.subject if subjects else 1.0) * (self.vertex if vertices else 1.0)


@dataclass
class ElboTerms:
    """Scaled ELBO terms (float64 scalars); ``total`` is their sum."""

    likelihood: torch.Tensor
    label_prior: torch.Tensor
    label_entropy: torch.Tensor
    session: torch.Tensor
    subject: torch.Tensor
    theta: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))
    potts: torch.Tensor = field(default_factory=lambda: torch.zeros((), dtype=torch.float64))

    NAMES = ("likelihood", "label_prior", "label_entropy", "session", "subject", "theta", "potts")

    @property
    def total(self) -> torch.Tensor:
        return sum(getattr(self, n) for n in self.NAMES)

    def as_floats(self) -> dict[str, float]:
        return {n: float(getattr(self, n).detach()) for n in self.NAMES}


def _sum64(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dtype=torch.float64)


def dirichlet_expected_log(beta: torch.Tensor) -> torch.Tensor:
    """E[log theta] under Dirichlet(beta), shape of ``beta`` (last axis = networks)."""
    return torch.digamma(beta) - torch.digamma(beta.sum(-1, keepdim=True))


def dirichlet_kl(beta: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """KL(Dir(beta) || Dir(alpha)) per row, shape ``beta.shape[:-1]``."""
    b0, a0 = beta.sum(-1), alpha.sum(-1)
    return (torch.lgamma(b0) - torch.lgamma(beta).sum(-1) - torch.lgamma(a0) + torch.lgamma(alpha).sum(-1)
            + ((beta - alpha) * dirichlet_expected_log(beta)).sum(-1))


def local_elbo(xe: torch.Tensor, valid: torch.Tensor, lam: torch.Tensor, log_lam: torch.Tensor,
               elog_theta: torch.Tensor, q: SubjectPosterior, mu: torch.Tensor, conc: Concentrations,
               session_mask: torch.Tensor, scale: PlateScale) -> ElboTerms:
    """ELBO terms of a minibatch of subjects x vertices, scaled to the full plates.

    Parameters
    ----------
    xe : Tensor of shape (B, T, V, K)
        ``x_{s,t,n} . E[nu_{s,t,l}]`` for the batch.
    valid : Tensor of bool, shape (B, T, V)
        True where the fingerprint exists (non-zero).
    lam, log_lam : Tensor of shape (B, V, K)
        q(y) probabilities and their logarithms.
    elog_theta : Tensor of shape (V, K) or (B, V, K)
        E_q[log theta_n] entering the label prior term.
    q : SubjectPosterior
        Factors of the batch subjects.
    mu : Tensor of shape (K, D)
    conc : Concentrations
    session_mask : Tensor of bool, shape (B, T)
        True where the subject has the session (its nu exists).
    scale : PlateScale

    Returns
    -------
    ElboTerms
    """
    dim = q.dim
    validf = valid.to(xe.dtype)
    # one batched call for every normaliser: kappa, sigma, eps, k_nu, k_psi
    ks = torch.cat([torch.stack([conc.kappa, conc.sigma, conc.eps]).reshape(3).to(q.k_nu.dtype),
                    q.k_nu.reshape(-1), q.k_psi.reshape(-1)])
    log_c = log_vmf_normalizer(ks, dim)
    n_nu = q.k_nu.numel()
    ent_nu = -log_c[3:3 + n_nu].reshape(q.k_nu.shape) - q.k_nu * q.a_nu
    ent_psi = -log_c[3 + n_nu:].reshape(q.k_psi.shape) - q.k_psi * q.a_psi
    per_vertex = (log_c[0].to(xe.dtype) + conc.kappa * xe) * validf[..., None]  # (B, T, V, K)
    lik = _sum64(lam * per_vertex.sum(1))
    prior = _sum64(lam * elog_theta)
    ent = -_sum64(lam * log_lam)
    sv = scale(True, True)
    # sessions: E log vMF(nu | psi, sigma) + H[q(nu)]; subjects: E log vMF(psi | mu, eps) + H[q(psi)]
    cos = (q.m_nu * q.m_psi[:, None]).sum(-1)
    ses = log_c[1] + conc.sigma * q.a_nu * q.a_psi[:, None] * cos + ent_nu
    ses = _sum64(ses * session_mask.to(ses.dtype)[..., None])
    sub = log_c[2] + conc.eps * q.a_psi * (q.m_psi * mu).sum(-1) + ent_psi
    return ElboTerms(likelihood=lik * sv, label_prior=prior * sv, label_entropy=ent * sv,
                     session=_sum64(ses) * scale(True, False), subject=_sum64(sub) * scale(True, False))


def theta_term(beta: torch.Tensor, alpha: torch.Tensor, scale: PlateScale) -> torch.Tensor:
    """-KL(q(theta_n) || p(theta_n)) summed over the batch vertices, vertex-scaled (float64)."""
    return -_sum64(dirichlet_kl(beta.double(), alpha.double().expand_as(beta))) * scale(False, True)


# --------------------------------------------------------------------------- theta prior
def fit_dirichlet_precision(counts: np.ndarray, base: np.ndarray, n_iter: int = 50,
                            init: float = 1.0) -> float:
    """Type-II maximum likelihood precision ``a0`` of a Dirichlet(a0 * base) over vertices.

    Minka's fixed point for a Dirichlet-multinomial with known mean ``base``, applied to the
    (soft) label counts of every vertex: the spatial prior's sharpness is learned from how
    much subjects disagree, without ground truth.

    Parameters
    ----------
    counts : ndarray of shape (N, K)
        Label counts over subjects at each vertex (soft counts allowed).
    base : ndarray of shape (K,)
        Mean of the Dirichlet (sums to 1).

    Returns
    -------
    float
    """
    from scipy.special import digamma

    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(1)
    a0 = float(init)
    for _ in range(n_iter):
        alpha = a0 * base
        num = (base * (digamma(counts + alpha) - digamma(alpha))).sum()
        den = (digamma(total + a0) - digamma(a0)).sum()
        new = a0 * num / max(den, 1e-300)
        if not np.isfinite(new) or new <= 0:
            break
        if abs(new - a0) < 1e-6 * a0:
            a0 = new
            break
        a0 = float(np.clip(new, 1e-4, 1e4))
    return float(a0)


# --------------------------------------------------------------------------- initialisation
def moment_concentrations(sums: np.ndarray, counts: np.ndarray, dim: float,
                          session_mask: np.ndarray) -> dict[str, float]:
    """Method-of-moments concentrations from per-network fingerprint sums under a labelling.

    With ``c_{s,t,l} = sum_{n in l} x_{s,t,n}`` over ``n_l`` vertices, independent noise gives
    ``|c|^2 = n_l + n_l (n_l - 1) A(kappa)^2``, ``E[c_{s,1,l} . c_{s,2,l}] = n_l^2 A(kappa)^2 A(sigma)^2``
    and, between subjects, an extra factor ``A(eps)^2``. Inverting gives starting values.

    Parameters
    ----------
    sums : ndarray of shape (S, T, K, D)
    counts : ndarray of shape (K,)
        Vertices per network.
    dim : float
    session_mask : ndarray of bool, shape (S, T)

    Returns
    -------
    dict with kappa, sigma, eps (floats; sigma/eps are None when they cannot be estimated).
    """

    n = np.maximum(counts.astype(np.float64), 2.0)
    sq = (sums.astype(np.float64) ** 2).sum(-1)
    a2k = (sq - n) / (n * (n - 1))
    valid = np.broadcast_to(session_mask[..., None], a2k.shape)
    a2k = float(np.clip(np.mean(a2k[valid]), 1e-6, 0.999))
    out = {"kappa": float(estimate_concentration(np.sqrt(a2k), dim)), "sigma": None, "eps": None}
    both = session_mask[:, 0] & session_mask[:, 1] if session_mask.shape[1] > 1 else np.zeros(0, bool)
    if both.sum() >= 1:
        within = (sums[both, 0].astype(np.float64) * sums[both, 1]).sum(-1)  # (S', K)
        a2s = float(np.clip(np.mean(within / (n ** 2 * a2k)), 1e-6, 0.999999))
        out["sigma"] = float(estimate_concentration(np.sqrt(a2s), dim))
        first = sums[session_mask[:, 0], 0].astype(np.float64)
        if len(first) >= 2:
            tot = first.sum(0)
            between = ((tot ** 2).sum(-1) - (first ** 2).sum((0, 2))) / (len(first) * (len(first) - 1))
            a2e = float(np.clip(np.mean(between / (n ** 2 * a2k * a2s)), 1e-6, 0.999999))
            out["eps"] = float(estimate_concentration(np.sqrt(a2e), dim))
    return out


def log_normalizer_scalar(kappa: float, dim: float) -> float:
    """Python-float log C_dim(kappa) (convenience for reports)."""
    return float(log_vmf_normalizer(torch.tensor(float(kappa), dtype=torch.float64), dim))


__all__ = ["project_sphere", "split_natural", "SubjectPosterior", "Concentrations", "PlateScale", "ElboTerms",
           "local_elbo", "theta_term", "dirichlet_expected_log", "dirichlet_kl", "fit_dirichlet_precision"]
