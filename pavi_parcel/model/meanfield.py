"""Mean-field stochastic VI for the MS-HBM: the 'off-the-shelf' baseline of the benchmark.

Same model, same ELBO terms, same optimiser and same plate subsampling as the PAVI guide, but
every factor has its own free parameters, as an automatic guide would create them:

* ``q(y_{s,n}) = Cat(softmax(logits_{s,n}))`` with a free logit vector per subject and vertex;
* ``q(psi_{s,l}) = vMF(m, k)``, ``q(nu_{s,t,l}) = vMF(m, k)`` with free directions (unconstrained
  vectors, demeaned and normalised in the forward pass and re-centred after every step, so Adam
  cannot push them out of the demeaned subspace) and free log-concentrations;
* ``q(theta_n) = Dirichlet(softplus(b_n))`` and ``mu`` learned by the optimiser.

A local parameter only moves when its subject (and vertex) is in the minibatch, which is what
plate amortization avoids.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pavi_parcel.settings.schema import ModelSettings

from .guide import GuideBase, InitState, SubjectEncoder
from .hierarchy import SubjectPosterior, project_sphere


class MeanFieldGuide(GuideBase):
    """Free-parameter guide; starts from the same point as :class:`~.guide.PaviGuide`.

    Parameters
    ----------
    init : InitState
    n_subjects, n_sessions : int
    settings : ModelSettings
        See :class:`~.guide.GuideBase`.
    """

    #: free unit vectors in fingerprint space, given a learning rate scaled by 1/sqrt(D) (see make_optimizer)
    DIRECTIONS = ("m_psi_raw", "m_nu_raw", "mu_raw")

    def __init__(self, init: InitState, n_subjects: int, n_sessions: int, settings: ModelSettings):
        super().__init__(init, n_subjects, n_sessions, settings)
        k_net, d = init.mu.shape
        lam0 = torch.as_tensor(init.initial_labels(k_net))
        self.logits = nn.Parameter(torch.log(lam0).expand(n_subjects, -1, -1).clone())
        with torch.no_grad():
            stats = torch.as_tensor(init.initial_stats(k_net)).sum(0)  # (K, D)
            stats = stats.expand(1, n_sessions, k_net, d)
            q = SubjectEncoder()(stats, torch.ones(1, n_sessions, dtype=torch.bool), self.mu,
                                 self.concentrations(), self.dim)
        self.m_psi_raw = nn.Parameter(q.m_psi.expand(n_subjects, -1, -1).clone())
        self.log_k_psi = nn.Parameter(torch.log(q.k_psi).expand(n_subjects, -1).clone())
        self.m_nu_raw = nn.Parameter(q.m_nu.expand(n_subjects, -1, -1, -1).clone())
        self.log_k_nu = nn.Parameter(torch.log(q.k_nu).expand(n_subjects, -1, -1).clone())
        self.mu_raw = nn.Parameter(self.mu.clone())
        beta0 = (self.alpha() + self.counts).float()
        self.beta_raw = nn.Parameter(beta0 + torch.log(-torch.expm1(-beta0)))

    def current_mu(self) -> torch.Tensor:
        return project_sphere(self.mu_raw)

    def theta_beta(self, verts: slice) -> torch.Tensor:
        return F.softplus(self.beta_raw[verts]).double() + 1e-6

    def group_probs(self) -> torch.Tensor:
        beta = F.softplus(self.beta_raw.detach()).double() + 1e-6
        return beta / beta.sum(-1, keepdim=True)

    def subject_posterior(self, subj: torch.Tensor, session_mask: torch.Tensor) -> SubjectPosterior:
        return SubjectPosterior(m_psi=project_sphere(self.m_psi_raw[subj]), k_psi=torch.exp(self.log_k_psi[subj]),
                                m_nu=project_sphere(self.m_nu_raw[subj]), k_nu=torch.exp(self.log_k_nu[subj]),
                                dim=self.dim)

    def label_log_probs(self, subj: torch.Tensor, verts: slice, evidence: torch.Tensor,
                        n_sessions: torch.Tensor | None = None) -> torch.Tensor:
        return torch.log_softmax(self.logits[subj, verts], dim=-1)

    @torch.no_grad()
    def after_step(self, subj: torch.Tensor, patch: int, sums: torch.Tensor, lam: torch.Tensor,
                   q: SubjectPosterior) -> None:
        """Re-centre free directions on the sphere of the demeaned subspace; track label counts."""
        a, b = self.patches[patch]
        for raw in (self.m_psi_raw, self.m_nu_raw, self.mu_raw):
            raw.copy_(project_sphere(raw))
        self.mu.copy_(self.mu_raw)
        self.update_labels(subj, slice(a, b), lam)

    def n_variational_parameters(self) -> dict[str, int]:
        learned = sum(p.numel() for n, p in self.named_parameters() if not n.startswith("log_conc"))
        return {"learned": int(learned), "closed_form_theta": 0, "mu": int(self.mu.numel())}

    def model_state(self) -> dict[str, Any]:
        state = super().model_state()
        # New subjects are encoded with the coordinate-ascent form of the encoders (unit gains).
        state.update(label_encoder=None, subject_encoder=None, encoder_iterations=3)
        return state


__all__ = ["MeanFieldGuide"]
