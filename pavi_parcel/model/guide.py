"""Plate-amortized variational family (PAVI, Rouillard et al. 2023) for the MS-HBM.

Every factor of q comes from a map shared across a plate rather than from free parameters
per plate element:

* Labels, plate (s, n): ``q(y_{s,n}) = Cat(lambda_{s,n})`` from one :class:`LabelEncoder` shared by
  every subject and vertex. Its form follows the coordinate-ascent update, with learned weights::

      logits_{s,n,l} = a * sum_t kappa x_{s,t,n} . E[nu_{s,t,l}] + b * log pi_{s,n,l} + c_l
                       (+ beta * sum_{m ~ n} lambda_{s,m,l}  with a Potts prior)

  where ``log pi_{s,n}`` is the log spatial prior of vertex n *for subject s*: by default the
  leave-one-subject-out posterior predictive of theta_n (``(alpha + C_n - lambda_{s,n}) / (a0 + S - 1)``,
  ``C_n`` the label counts of all subjects), so a subject's own labels never sharpen its own prior.
* Subjects and sessions, plates s and (s, t): ``q(psi_s), q(nu_{s,t})`` are vMFs whose natural
  parameters come from a shared :class:`SubjectEncoder` applied to a per-subject *encoding*::

      eta_nu  = g1 kappa R_{s,t,l} + g2 sigma E[psi_{s,l}]
      eta_psi = g3 eps mu_l        + g4 sigma sum_t E[nu_{s,t,l}]       (3 unrolled iterations)

  PAVI-E: ``R_{s,t,l} = sum_n lambda_{s,n,l} x_{s,t,n}`` is computed from the subject's data by a set
  encoder pooling over vertices; it is streamed, one vertex patch at a time (each visited patch
  replaces its own contribution, as in incremental EM), so a new subject is encoded by a pass
  over its vertices plus a few refinement passes. PAVI-F: ``R_{s,t,l} = r_l mu_l + W_l z_{s,t,l}``
  with a small free encoding ``z`` per subject and shared ``r``, ``W``.
* Global parameters: ``q(theta_n) = Dirichlet(alpha + C_n)`` and ``mu_l ∝ sum_s E[psi_{s,l}]`` are
  closed-form updates from the encoders' outputs (running sums updated at every step), so the
  vertex plate never waits for a gradient optimiser. The Dirichlet prior ``alpha = a0 * base``
  has its precision ``a0`` fitted by type-II maximum likelihood (Minka) on the label counts:
  how sharp the spatial prior is, is learned from how much subjects disagree.
* Calibration: the vMF likelihood assumes isotropic noise and independent sessions; real
  fingerprints have neither, which makes ``kappa x . E[nu]`` overstate the evidence and the
  maps overconfident. At the end of every epoch (and before the final posteriors),
  :func:`.labels.consistency_temperature` estimates, from subjects
  with two sessions and without ground truth, the correlation ``rho`` of the two sessions'
  evidence and a temperature ``tau`` on the trained label logits restoring the
  posterior-consistency identity; :meth:`LabelEncoder.calibrate` then fixes the label encoder
  to ``tau * (a * evidence / (1 + (n_t - 1) rho) + b * log prior + c)`` for the reported maps
  (a temperature on all the trained logits: the preferred network stays preferred), with the
  evidence of each vertex taken against session profiles estimated without it
  (:func:`.labels.cavity_evidence`: a vertex's own fingerprint no longer votes for the label it
  already carries). During
  training, the end-of-epoch calibrations temper the evidence alone
  (``tau / (1 + (n_t - 1) rho) * evidence + log prior``), so the labels that update the encodings
  ``R`` and theta's counts keep the spatial prior at full weight and an uncertain vertex does
  not pull a network's profile with full weight. Of the combinations tried, this one gave the
  most accurate and best calibrated maps both on directly simulated fingerprints and on
  fingerprints from simulated BOLD runs (whose noise is correlated across seeds and sessions,
  where tempering the evidence alone in the reported maps let the prior pull them towards the
  group). Choosing ``kappa`` by the ELBO or by
  held-out-session likelihood does not fix this (both reward sharper vMFs).

Parameter counts: PAVI-E learns 2 + K label-encoder weights, 4 subject-encoder gains and 3
concentrations, whatever the cohort size; its per-subject encodings, label counts, theta and mu
are closed-form state. Mean-field SVI learns ``S N K + S K D (T + 1) + ...`` free parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pavi_parcel.settings.schema import ModelSettings

from .hierarchy import (
    Concentrations,
    SubjectPosterior,
    dirichlet_expected_log,
    fit_dirichlet_precision,
    project_sphere,
    split_natural,
)
from .labels import SOFTPLUS_ONE, LabelEncoder, cavity_evidence
from .vmf import mean_resultant_length


def _inv_softplus(v: float) -> float:
    return float(v + math.log(-math.expm1(-v))) if v < 20 else float(v)


@dataclass
class InitState:
    """Starting point shared by every method (so their ELBO curves start together).

    Attributes
    ----------
    mu : ndarray of shape (K, D)
        Group profiles from group spherical k-means (deterministic order).
    group_labels : ndarray of int, shape (N,)
    concentrations : dict
        kappa, sigma, eps starting values.
    rho : float
        Mean resultant length of fingerprints around their network's profile.
    patches : list of (int, int)
        Vertex patches [start, stop) of the fixed partition (contiguous store rows).
    dim : float
        Sphere dimension D - 1.
    prior : ndarray of shape (N, K) or None
        Atlas prior probabilities (``model.prior``, see :mod:`pavi_parcel.atlas.priors`): the per-vertex
        base of theta's Dirichlet prior; None = network frequencies shared by every vertex.
    """

    mu: np.ndarray
    group_labels: np.ndarray
    concentrations: dict
    rho: float
    patches: list
    dim: float
    prior: np.ndarray | None = None

    def initial_labels(self, n_networks: int) -> np.ndarray:
        """Soft starting labels (N, K): 0.7 on the group label, the rest spread evenly."""
        out = np.full((len(self.group_labels), n_networks), 0.3 / n_networks, dtype=np.float32)
        out[np.arange(len(out)), self.group_labels] += 0.7
        return out

    def initial_stats(self, n_networks: int) -> np.ndarray:
        """Per-patch label-weighted sums (P, K, D) if every subject had the group labels."""
        out = np.zeros((len(self.patches), n_networks, self.mu.shape[1]), dtype=np.float32)
        for p, (a, b) in enumerate(self.patches):
            n_l = np.bincount(self.group_labels[a:b], minlength=n_networks).astype(np.float32)
            out[p] = self.rho * n_l[:, None] * self.mu
        return out


class SubjectEncoder(nn.Module):
    """Shared map from a subject's encoding R (T, K, D) to q(psi_s), q(nu_{s,t}) (vMF natural params)."""

    def __init__(self, n_iter: int = 3):
        super().__init__()
        self.gains_raw = nn.Parameter(torch.full((4,), SOFTPLUS_ONE))
        self.n_iter = int(n_iter)

    @property
    def data_gain(self) -> torch.Tensor:
        """The gain ``g`` of the encodings in q(nu)'s natural parameter, ``eta_nu = g kappa R + ...``."""
        return F.softplus(self.gains_raw[0])

    def forward(self, stats: torch.Tensor, session_mask: torch.Tensor, mu: torch.Tensor,
                conc: Concentrations, dim: float) -> SubjectPosterior:
        """
        Parameters
        ----------
        stats : Tensor of shape (B, T, K, D)
            Encodings (label-weighted fingerprint sums for PAVI-E).
        session_mask : Tensor of bool, shape (B, T)
        mu : Tensor of shape (K, D)
        conc : Concentrations
        dim : float

        Returns
        -------
        SubjectPosterior
        """
        g = F.softplus(self.gains_raw)
        mask = session_mask.to(stats.dtype)[..., None, None]
        data_term = g[0] * conc.kappa * stats
        group_term = g[2] * conc.eps * mu
        e_psi = mu.expand(stats.shape[0], *mu.shape)
        for _ in range(self.n_iter):
            m_nu, k_nu = split_natural(data_term + g[1] * conc.sigma * e_psi[:, None])
            e_nu = mean_resultant_length(k_nu, dim)[..., None] * m_nu * mask
            m_psi, k_psi = split_natural(group_term + g[3] * conc.sigma * e_nu.sum(1))
            e_psi = mean_resultant_length(k_psi, dim)[..., None] * m_psi
        m_nu, k_nu = split_natural(data_term + g[1] * conc.sigma * e_psi[:, None])
        return SubjectPosterior(m_psi=m_psi, k_psi=k_psi, m_nu=m_nu, k_nu=k_nu, dim=dim,
                                a_psi=e_psi.norm(dim=-1), a_nu=mean_resultant_length(k_nu, dim))


class GuideBase(nn.Module):
    """State shared by every gradient-based method: concentrations, mu, theta, label counts.

    Parameters
    ----------
    init : InitState
    n_subjects, n_sessions : int
    settings : ModelSettings
        Which concentrations are learned, theta's prior, the spatial prior's input, Potts beta.
    """

    def __init__(self, init: InitState, n_subjects: int, n_sessions: int, settings: ModelSettings):
        super().__init__()
        k_net, d = init.mu.shape
        self.n_networks, self.n_subjects, self.n_sessions, self.dim = k_net, n_subjects, n_sessions, init.dim
        self.patches = [tuple(p) for p in init.patches]
        self.settings = settings
        c = init.concentrations
        self.log_conc = nn.ParameterDict({
            name: nn.Parameter(torch.tensor(math.log(float(c[name]))),
                               requires_grad=bool(getattr(settings, f"learn_{name}")))
            for name in ("kappa", "sigma", "eps")})
        self.register_buffer("mu", torch.as_tensor(init.mu, dtype=torch.float32).clone())
        lam0 = torch.as_tensor(init.initial_labels(k_net)).to(torch.float16)
        self.register_buffer("lam_cache", lam0.expand(n_subjects, *lam0.shape).clone())
        self.register_buffer("counts", lam0.double() * n_subjects)
        prior = settings.theta_prior
        self.auto_prior = prior == "auto"
        self.register_buffer("alpha0", torch.tensor(1.0 if self.auto_prior else float(prior), dtype=torch.float64))
        atlas = getattr(init, "prior", None)  # (N, K) atlas prior: a per-vertex base, kept fixed
        self.atlas_prior = atlas is not None
        self.register_buffer("base", torch.full((k_net,), 1.0 / k_net, dtype=torch.float64) if atlas is None
                             else torch.as_tensor(np.asarray(atlas), dtype=torch.float64).clone())
        # a fixed beta also couples the labels in training; "auto" is chosen for the reported maps only
        self.potts_beta = 0.0 if settings.potts_beta == "auto" else float(settings.potts_beta)
        self.neighbours = None  # optional (N, M) int tensor padded with -1, set by the fit

    # ------------------------------------------------------------------ globals
    def current_mu(self) -> torch.Tensor:
        """Group profiles mu entering the ELBO, shape (K, D)."""
        return self.mu

    def concentrations(self) -> Concentrations:
        e = {k: torch.exp(v) for k, v in self.log_conc.items()}
        return Concentrations(kappa=e["kappa"], sigma=e["sigma"], eps=e["eps"])

    def alpha(self, verts: slice = slice(None)) -> torch.Tensor:
        """Dirichlet prior parameters of theta_n, float64: shape (K,) (one base for every vertex),
        or (V, K) for the vertices ``verts`` with an atlas prior (``alpha_n = a0 * base_n``)."""
        return self.alpha0 * (self.base[verts] if self.atlas_prior else self.base)

    def theta_beta(self, verts: slice) -> torch.Tensor:
        """Parameters of q(theta_n) for the vertices ``verts``, shape (V, K), float64."""
        return self.alpha(verts) + self.counts[verts]

    def group_probs(self) -> torch.Tensor:
        """Posterior predictive label probabilities of a new subject, shape (N, K) (the atlas)."""
        beta = self.alpha() + self.counts
        return beta / beta.sum(-1, keepdim=True)

    def label_evidence(self, xe: torch.Tensor, valid: torch.Tensor, subj: torch.Tensor, verts: slice,
                       q: SubjectPosterior, cavity: bool | None = None) -> torch.Tensor:
        """Per-session evidence ``kappa x . E[nu]`` entering the label encoder, shape (B, T, V, K).

        ``xe`` (B, T, V, K) are the products ``x . E[nu]``, ``valid`` (B, T, V) the sessions present.
        """
        return self.concentrations().kappa * xe * valid[..., None]

    def log_prior(self, subj: torch.Tensor, verts: slice) -> torch.Tensor:
        """Per-subject log spatial prior entering the label encoder, shape (B, V, K)."""
        if self.settings.theta_input == "vb":
            return dirichlet_expected_log(self.theta_beta(verts)).float().expand(len(subj), -1, -1)
        beta = self.theta_beta(verts)[None] - self.lam_cache[subj, verts].double()
        beta = beta.clamp_min(1e-8)
        return (torch.log(beta) - torch.log(beta.sum(-1, keepdim=True))).float()

    def neighbour_sum(self, subj: torch.Tensor, verts: slice) -> torch.Tensor | None:
        """Sum of the neighbours' cached label probabilities, shape (B, V, K), or None without Potts."""
        if self.neighbours is None or self.potts_beta <= 0:
            return None
        nb = self.neighbours[verts]
        # gather only the patch's neighbours (half precision) before converting, not all N vertices
        gathered = self.lam_cache[subj[:, None, None], nb.clamp_min(0)[None]].float()  # (B, V, M, K)
        return (gathered * (nb >= 0).to(gathered.dtype)[None, ..., None]).sum(2)

    @torch.no_grad()
    def update_labels(self, subj: torch.Tensor, verts: slice, lam: torch.Tensor) -> None:
        """Closed-form theta update: replace these subjects' labels in the running counts."""
        new = lam.to(torch.float16)
        self.counts[verts] += (new.double() - self.lam_cache[subj, verts].double()).sum(0)
        self.lam_cache[subj, verts] = new

    @torch.no_grad()
    def refit_theta_prior(self) -> None:
        """Type-II ML update of the Dirichlet precision a0 and base (network frequencies)."""
        if not self.auto_prior:
            return
        counts = self.counts.clamp_min(0).cpu().numpy()
        if self.atlas_prior:  # keep the atlas base, fit a0 (unidentified with one subject: kept)
            if self.n_subjects >= 2:
                self.alpha0.fill_(fit_dirichlet_precision(counts, self.base.cpu().numpy(), init=float(self.alpha0)))
            return
        base = counts.sum(0) + 1.0
        base = base / base.sum()
        a0 = fit_dirichlet_precision(counts, base, init=float(self.alpha0))
        self.base.copy_(torch.as_tensor(base))
        self.alpha0.fill_(a0)

    def model_state(self) -> dict[str, Any]:
        """What :func:`infer_subjects` needs to parcellate new subjects."""
        conc = self.concentrations()
        return {"mu": self.current_mu().detach().cpu(), "kappa": float(conc.kappa.detach()),
                "sigma": float(conc.sigma.detach()), "eps": float(conc.eps.detach()), "dim": self.dim,
                "log_prior": torch.log(self.group_probs()).float().cpu(),
                "patches": self.patches, "potts_beta": self.potts_beta}


class PaviGuide(GuideBase):
    """PAVI-E (``encoding='data'``) or PAVI-F (``encoding='free'``) guide; see the module docstring."""

    def __init__(self, init: InitState, n_subjects: int, n_sessions: int, settings: ModelSettings,
                 encoding: str = "data", encoding_dim: int = 8, seed: int = 0):
        super().__init__(init, n_subjects, n_sessions, settings)
        k_net, d = init.mu.shape
        self.encoding = encoding
        self.label_encoder = LabelEncoder(k_net)
        self.subject_encoder = SubjectEncoder(settings.encoder_iterations)
        stats0 = torch.as_tensor(init.initial_stats(k_net))  # (P, K, D)
        if encoding == "data":
            self.register_buffer("stats", stats0[None, :, None].expand(
                n_subjects, -1, n_sessions, -1, -1).clone())
        else:
            gen = torch.Generator().manual_seed(seed)
            self.z = nn.Parameter(torch.zeros(n_subjects, n_sessions, k_net, encoding_dim))
            self.basis = nn.Parameter(1e-2 * torch.randn(k_net, encoding_dim, d, generator=gen))
            self.r_raw = nn.Parameter(torch.as_tensor(
                [_inv_softplus(float(v)) for v in stats0.sum(0).norm(dim=-1)], dtype=torch.float32))
        self.register_buffer("psi_cache", torch.as_tensor(init.mu).expand(n_subjects, k_net, d).clone())

    def encodings(self, subj: torch.Tensor) -> torch.Tensor:
        """Per-subject encoding R, shape (B, T, K, D)."""
        if self.encoding == "data":
            return self.stats[subj].sum(1)
        base = F.softplus(self.r_raw)[:, None] * self.mu
        dev = torch.einsum("btkr,krd->btkd", self.z[subj], self.basis)
        return base + dev - dev.mean(-1, keepdim=True)

    def subject_posterior(self, subj: torch.Tensor, session_mask: torch.Tensor) -> SubjectPosterior:
        return self.subject_encoder(self.encodings(subj), session_mask, self.mu, self.concentrations(), self.dim)

    def label_evidence(self, xe: torch.Tensor, valid: torch.Tensor, subj: torch.Tensor, verts: slice,
                       q: SubjectPosterior, cavity: bool | None = None) -> torch.Tensor:
        """As :meth:`GuideBase.label_evidence`; PAVI-E's reported maps score each vertex against
        cavity session profiles (:func:`.labels.cavity_evidence`). ``cavity`` None = the label
        encoder's calibrated form decides."""
        cavity = self.label_encoder.uses_cavity if cavity is None else cavity
        if not (cavity and self.self_votes):
            return super().label_evidence(xe, valid, subj, verts, q)
        ev = cavity_evidence(xe, self.lam_cache[subj, verts].float(), q.k_nu, q.a_nu, self.concentrations().kappa,
                             self.subject_encoder.data_gain, self.dim)
        return ev * valid[..., None]

    @property
    def self_votes(self) -> bool:
        """Whether a vertex's own fingerprint is part of the session profiles it is scored against
        (PAVI-E: encodings are label-weighted sums of the data), so the reported maps take
        :func:`.labels.cavity_evidence`."""
        return self.encoding == "data"

    def label_log_probs(self, subj: torch.Tensor, verts: slice, evidence: torch.Tensor,
                        n_sessions: torch.Tensor | None = None) -> torch.Tensor:
        return self.label_encoder(evidence, self.log_prior(subj, verts), self.neighbour_sum(subj, verts),
                                  self.potts_beta, n_sessions)

    @torch.no_grad()
    def after_step(self, subj: torch.Tensor, patch: int, sums: torch.Tensor, lam: torch.Tensor,
                   q: SubjectPosterior) -> None:
        """Closed-form updates: streamed encodings, label counts (theta), psi cache and mu.

        ``sums`` (B, T, K, D) are the patch's label-weighted fingerprint sums; they replace the
        patch's previous contribution to each batch subject's encoding (incremental EM).
        """
        a, b = self.patches[patch]
        if self.encoding == "data":
            self.stats[subj, patch] = sums
        self.update_labels(subj, slice(a, b), lam)
        self.psi_cache[subj] = q.e_psi.detach().float()
        self.mu.copy_(project_sphere(self.psi_cache.sum(0)))

    def model_state(self) -> dict[str, Any]:
        state = super().model_state()
        state.update(label_encoder=self.label_encoder.state_dict(),
                     subject_encoder=self.subject_encoder.state_dict(),
                     encoder_iterations=self.subject_encoder.n_iter)
        return state

    def n_variational_parameters(self) -> dict[str, int]:
        """Free variational parameters (optimised) and closed-form state sizes."""
        learned = sum(p.numel() for n, p in self.named_parameters() if not n.startswith("log_conc"))
        return {"learned": int(learned), "closed_form_theta": int(self.counts.numel()),
                "mu": int(self.mu.numel())}
