"""The shared label encoder of the PAVI guide, and its calibration without ground truth.

:class:`LabelEncoder` maps the evidence ``kappa x . E[nu]`` and the log spatial prior of a vertex
to its label probabilities, with weights learned with the ELBO; :func:`consistency_temperature`
then fixes those weights from two-session subjects so that the probabilities mean what they say
(see :mod:`.guide` for where both sit in the variational family).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .vmf import mean_resultant_length

SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(SOFTPLUS_ONE) = 1: unit starting weights


class LabelEncoder(nn.Module):
    """Shared map (x . E[nu], log prior, neighbours) -> log q(y); weights a, b, c (and Potts beta).

    During training a, b, c are learned with the ELBO. :meth:`calibrate` then fixes the reported
    probabilities to one of two tempered forms, for a vertex seen in ``n_t`` sessions:

    * ``tempers_prior=True`` (two-session calibration, :func:`consistency_temperature`): a
      temperature on the trained logits, ``tau * (a * evidence / (1 + (n_t - 1) rho) + b * log prior
      + c)``. The network the trained encoder prefers stays preferred (up to the cross-session
      correction); only the confidence changes, as in temperature scaling.
    * ``tempers_prior=False`` (the end-of-epoch calibrations of training, and the calibration
      against an atlas prior of :mod:`pavi_parcel.inference.calibration`): a tempered likelihood,
      ``tau / (1 + (n_t - 1) rho) * evidence + log prior``.

    With ``cavity`` (the reported maps of PAVI-E), the evidence is :func:`cavity_evidence`: each
    vertex is scored against session profiles estimated without its own fingerprint.
    """

    def __init__(self, n_networks: int):
        super().__init__()
        self.a_raw = nn.Parameter(torch.tensor(SOFTPLUS_ONE))
        self.b_raw = nn.Parameter(torch.tensor(SOFTPLUS_ONE))
        self.c = nn.Parameter(torch.zeros(n_networks))
        self.register_buffer("tau", torch.tensor(0.0))  # 0 = not calibrated
        self.register_buffer("rho", torch.tensor(0.0))
        self.register_buffer("tempers_prior", torch.tensor(0.0))  # 1 = temperature on all trained logits
        self.register_buffer("cavity", torch.tensor(0.0))  # 1 = calibrated on cavity evidence

    @property
    def calibrated(self) -> bool:
        return float(self.tau) > 0

    @property
    def uses_cavity(self) -> bool:
        """Whether the calibrated weights expect :func:`cavity_evidence` as their evidence."""
        return self.calibrated and float(self.cavity) > 0

    def trained_weights(self) -> tuple[float, float, torch.Tensor]:
        """The ELBO-trained weights ``(a, b, c)``: evidence, log prior, per-network bias (K,)."""
        return float(F.softplus(self.a_raw).detach()), float(F.softplus(self.b_raw).detach()), self.c.detach()

    @torch.no_grad()
    def calibrate(self, tau: float, rho: float, tempers_prior: bool = False, cavity: bool = False) -> None:
        """Freeze the calibrated weights: temperature tau, cross-session correlation rho, form (see class)."""
        self.tau.fill_(float(tau))
        self.rho.fill_(float(rho))
        self.tempers_prior.fill_(float(tempers_prior))
        self.cavity.fill_(float(cavity))
        for p in self.parameters():
            p.requires_grad_(False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # states saved before the temperature form existed used the tempered likelihood
        state_dict.setdefault(prefix + "tempers_prior", torch.tensor(0.0))
        state_dict.setdefault(prefix + "cavity", torch.tensor(0.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, evidence: torch.Tensor, log_prior: torch.Tensor, neighbour: torch.Tensor | None = None,
                beta: float = 0.0, n_sessions: torch.Tensor | None = None,
                calibrated: bool | None = None) -> torch.Tensor:
        """Log label probabilities.

        Parameters
        ----------
        evidence : Tensor of shape (B, V, K)
            ``sum_t kappa x_{s,t,n} . E[nu_{s,t,l}]`` over the sessions present.
        log_prior : Tensor of shape (B, V, K) or (V, K)
        neighbour : Tensor of shape (B, V, K), optional
            Sum of the neighbours' current label probabilities (Potts).
        beta : float
        n_sessions : Tensor of shape (B, V), optional
            Sessions present at each vertex (used once calibrated; 1 when omitted).
        calibrated : bool, optional
            Use the calibrated weights (default: whenever :meth:`calibrate` was called) or the
            ELBO-trained ones (used to refine encodings).

        Returns
        -------
        Tensor of shape (B, V, K)
        """
        if self.calibrated if calibrated is None else (calibrated and self.calibrated):
            n = torch.ones(evidence.shape[:-1], device=evidence.device) if n_sessions is None else n_sessions
            share = (1.0 / (1.0 + (n.clamp_min(1) - 1.0) * self.rho))[..., None]  # sessions' worth per session
            if bool(self.tempers_prior > 0):
                logits = self.tau * (F.softplus(self.a_raw) * share * evidence + F.softplus(self.b_raw) * log_prior
                                     + self.c)
            else:
                logits = self.tau * share * evidence + log_prior
        else:
            logits = F.softplus(self.a_raw) * evidence + F.softplus(self.b_raw) * log_prior + self.c
        if neighbour is not None and beta > 0:
            logits = logits + beta * neighbour
        return torch.log_softmax(logits, dim=-1)


def cavity_evidence(xe: torch.Tensor, lam: torch.Tensor, k_nu: torch.Tensor, a_nu: torch.Tensor,
                    kappa: torch.Tensor, data_gain: torch.Tensor, dim: float) -> torch.Tensor:
    """Per-session evidence of each vertex against session profiles estimated without it.

    PAVI-E's session profile ``q(nu_{s,t,l})`` has natural parameter
    ``eta = g kappa sum_m lambda_{m,l} x_m + (the subject term)``, so vertex n's own fingerprint
    is part of the profile it is then scored against: ``x_n . E[nu_l]`` is inflated for the
    labels n already carries (a self-reinforcement that mean-field updates share, strongest
    where the signal is weak). The cavity profile removes that contribution,
    ``eta^{-n} = eta - g kappa lambda_{n,l} x_n``, and since ``|x_n| = 1`` both quantities needed,
    ``x_n . eta^{-n} = k (x_n . m) - w`` and ``|eta^{-n}|^2 = k^2 - 2 w k (x_n . m) + w^2`` with
    ``w = g kappa lambda_{n,l}``, follow from the products already computed: no extra pass over
    the fingerprints. The subject profile psi is kept (its dependence on one vertex is
    second order). On directly simulated fingerprints (20 subjects, SNR 0.4, post-hoc on one
    fit) this halved the calibration error of the reported maps (0.054 to 0.026).

    Parameters
    ----------
    xe : Tensor of shape (B, T, V, K)
        ``x_{s,t,n} . E[nu_{s,t,l}]`` (zero where a session has no data).
    lam : Tensor of shape (B, V, K)
        Label weights of these vertices in the encodings the profiles came from.
    k_nu, a_nu : Tensor of shape (B, T, K)
        Concentration of q(nu) and its mean resultant length ``A(k_nu)``.
    kappa, data_gain : Tensor (scalar)
        Likelihood concentration and the subject encoder's data gain ``g``.
    dim : float

    Returns
    -------
    Tensor of shape (B, T, V, K)
        ``kappa x_n . E[nu^{-n}]``.
    """
    k = k_nu[:, :, None, :]
    xm = xe / a_nu[:, :, None, :].clamp_min(1e-12)  # x . m_nu
    w = data_gain * kappa * lam[:, None]
    k_cav = (k * k - 2.0 * w * k * xm + w * w).clamp_min(1e-12).sqrt()
    return kappa * mean_resultant_length(k_cav, dim) * (k * xm - w) / k_cav


def consistency_temperature(evidence: torch.Tensor, log_prior: torch.Tensor, labels: torch.Tensor,
                            weights: tuple[float, float, torch.Tensor | None] = (1.0, 1.0, None),
                            tempers_prior: bool = True, lo: float = 1e-4, hi: float = 4.0, n_iter: int = 24,
                            max_rows: int = 60_000) -> tuple[float, float]:
    """Calibrate the label posteriors from the data alone, with two sessions per subject.

    Two facts of a correct posterior are used, neither needs ground truth:

    1. *Cross-session correlation.* Given the labels, the vMF likelihood treats sessions as
       independent; fingerprints share subject-specific structure, so the discriminant
       evidence of two sessions is correlated (``rho``, measured on within-network residuals of
       the evidence differences ``e_{t,y} - e_{t,l}`` at confidently labelled vertices). ``T``
       sessions then carry ``T / (1 + (T - 1) rho)`` sessions' worth of information.
    2. *Posterior consistency (martingale property).* For a calibrated model, the posterior
       from session 1 alone equals the expectation of the posterior from both sessions:
       ``E[p_12(y_1) | x_1] = p_1(y_1)`` at the label ``y_1`` session 1 prefers. The vMF
       evidence, ``kappa x . E[nu]``, overstates the information when the noise is not
       isotropic; a temperature ``tau`` on the label logits ``a e + b log prior + c`` (the trained
       label encoder's) and solving ``mean(p_12(y_1) - p_1(y_1)) + mean(p_12(y_2) - p_2(y_2)) = 0``
       for ``tau`` by bisection on ``log tau`` restores the property.

    For the reported maps the temperature multiplies the whole logits, prior included
    (``tempers_prior=True``): tempering only the evidence shifts weight to the spatial prior
    wherever the evidence is overstated, which pulled individual maps towards the group (10
    subjects, fingerprints from simulated 10-minute BOLD runs: ARI 0.815 and ECE 0.057 with the
    evidence tempered, 0.874 and 0.017 with the logits tempered). Scaling all logits keeps the
    trained encoder's ranking of networks and changes only its confidence.

    Parameters
    ----------
    evidence : Tensor of shape (S, 2, N, K)
        Per-session evidence ``kappa x_{s,t,n} . E[nu_{s,t,l}]`` of subjects with two sessions.
    log_prior : Tensor of shape (S, N, K)
        Log spatial prior of each subject (leave-one-out predictive).
    labels : Tensor of int64, shape (S, N)
        Current labels (-1 to skip a vertex) used for the residual correlation.
    weights : (float, float, Tensor of shape (K,) or None)
        The label encoder's trained weights ``(a, b, c)`` (:meth:`LabelEncoder.trained_weights`);
        ``c`` None = zero.
    tempers_prior : bool
        Temperature on the whole logits (True) or on the evidence alone (False, with the
        default weights: ``tau * evidence + log prior``); see :class:`LabelEncoder`.
    lo, hi : float
        Search range of ``tau``.
    n_iter : int
        Bisection steps on ``log tau`` (24 resolve it to about 1e-6 relative).
    max_rows : int
        Subject-vertices (an even subsample) entering the consistency gap.

    Returns
    -------
    tau : float
    rho : float, in [0, 1)
    """
    e = evidence.double()
    k_net = e.shape[-1]
    own = e.gather(-1, labels.clamp_min(0)[:, None, :, None].expand(-1, 2, -1, 1))
    diff = own - e  # (S, 2, N, K)
    keep = (labels >= 0)[:, None, :, None] & (torch.arange(k_net) != labels.clamp_min(0)[..., None])[:, None]
    num = v1 = v2 = 0.0
    for network in range(k_net):
        sel = (labels == network)
        if int(sel.sum()) < 10:
            continue
        d = diff.permute(0, 2, 1, 3)[sel]  # (n, 2, K)
        m = keep.permute(0, 2, 1, 3)[sel].to(d.dtype)
        r = (d - d.mean(0, keepdim=True)) * m
        num += float((r[:, 0] * r[:, 1]).sum())
        v1 += float((r[:, 0] ** 2).sum())
        v2 += float((r[:, 1] ** 2).sum())
    rho = float(np.clip(num / max(np.sqrt(v1 * v2), 1e-300), 0.0, 0.99))
    # the gap is a mean over vertices: an even subsample of at most max_rows subject-vertices keeps
    # it to within a fraction of a percent and makes each bisection step cheap
    stride = max(1, math.ceil(e.shape[0] * e.shape[2] / max_rows))
    a, b, c = weights
    prior = b * log_prior[:, ::stride].float() + (0.0 if c is None else c.float().cpu())
    e1, e2 = a * e[:, 0, ::stride].float(), a * e[:, 1, ::stride].float()
    e12 = (e1 + e2) / (1.0 + rho)

    def tempered(evidence: torch.Tensor, tau: float) -> torch.Tensor:
        return torch.softmax(tau * (evidence + prior) if tempers_prior else tau * evidence + prior, -1)

    def gap(tau: float) -> float:
        p1, p2, p12 = tempered(e1, tau), tempered(e2, tau), tempered(e12, tau)
        y1, y2 = p1.argmax(-1, keepdim=True), p2.argmax(-1, keepdim=True)
        return float((p12.gather(-1, y1) - p1.gather(-1, y1)).mean(dtype=torch.float64)
                     + (p12.gather(-1, y2) - p2.gather(-1, y2)).mean(dtype=torch.float64))

    a, b = math.log(lo), math.log(hi)
    if gap(hi) >= 0:
        return hi, rho
    if gap(lo) <= 0:
        return lo, rho
    for _ in range(n_iter):
        mid = 0.5 * (a + b)
        if gap(math.exp(mid)) > 0:
            a = mid
        else:
            b = mid
    return float(math.exp(0.5 * (a + b))), rho


__all__ = ["LabelEncoder", "SOFTPLUS_ONE", "cavity_evidence", "consistency_temperature"]
