"""The race's common yardstick: every method's state, scored by one ELBO on the same subjects.

Each method keeps its own representation (PAVI's encoders, mean-field SVI's free parameters,
VB-EM's closed-form factors, Pyro's MAP points). For scoring, each is read as a state of the
package's variational family (q(y), q(nu), q(psi) vMF, q(theta) Dirichlet, point mu and
concentrations) and the exact ELBO of :func:`pavi_parcel.model.hierarchy.local_elbo` is computed on a
fixed subset of subjects, scaled to the cohort. The subset's per-subject terms give the
estimate's standard error (finite-population correction included) and, between two states scored
on the same subjects, the error of their difference.

* Gradient methods (PAVI-E, PAVI-F, mean-field SVI) are scored through their own guide.
* VB-EM's state is copied into a :class:`ClosedThetaMeanField` guide (its q(theta) is the
  closed-form Dirichlet of its label counts).
* Pyro's MAP points become mean directions; their concentrations are the ones the closed-form
  coordinate update assigns given the exact label posterior (:func:`complete_points`), since a
  point estimate has no spread of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pavi_parcel.inference.passes import subject_pass
from pavi_parcel.metrics.scores import adjusted_rand_index
from pavi_parcel.model.guide import GuideBase, InitState
from pavi_parcel.model.hierarchy import PlateScale, theta_term
from pavi_parcel.model.meanfield import MeanFieldGuide
from pavi_parcel.settings.schema import ModelSettings


class ClosedThetaMeanField(MeanFieldGuide):
    """Mean-field SVI with q(theta) in closed form: ``Dirichlet(alpha + label counts)``, as PAVI has it.

    The free parameters of q(theta) are dropped from the optimiser; the counts follow the
    free label logits through :meth:`~pavi_parcel.model.guide.GuideBase.update_labels`.
    """

    def __init__(self, init: InitState, n_subjects: int, n_sessions: int, settings: ModelSettings):
        super().__init__(init, n_subjects, n_sessions, settings)
        self.beta_raw.requires_grad_(False)

    def theta_beta(self, verts: slice) -> torch.Tensor:
        return GuideBase.theta_beta(self, verts)

    def group_probs(self) -> torch.Tensor:
        return GuideBase.group_probs(self)

    def n_variational_parameters(self) -> dict[str, int]:
        learned = sum(p.numel() for n, p in self.named_parameters() if p.requires_grad and not n.startswith("log_conc"))
        return {"learned": int(learned), "closed_form_theta": int(self.counts.numel()), "mu": int(self.mu.numel())}


@dataclass
class Score:
    """One evaluation: the ELBO estimate, its standard error, the per-subject terms, the mean ARI."""

    elbo: float
    se: float
    per_subject: list[float]
    ari: float


class Evaluator:
    """Exact ELBO of chosen subjects, scaled to the cohort, and their ARI against planted labels.

    Parameters
    ----------
    source : FingerprintSource
    session_mask : Tensor of bool, shape (S, T)
    subjects : ndarray of int
        Store rows scored (fixed for the whole race).
    truth : list of ndarray of int, each (N,)
        Planted labels of those subjects on the store's vertices (0-based).
    """

    def __init__(self, source, session_mask: torch.Tensor, subjects: np.ndarray, truth: list[np.ndarray]):
        self.source, self.smask = source, session_mask
        self.subjects = np.asarray(subjects, dtype=int)
        self.truth = truth
        self.n_subjects = int(session_mask.shape[0])

    @torch.no_grad()
    def __call__(self, guide) -> Score:
        per_subject, aris = [], []
        for s, labels in zip(self.subjects, self.truth):
            probs, terms = subject_pass(guide, self.source, int(s), self.smask, update=False)
            per_subject.append(sum(terms.values()))
            aris.append(adjusted_rand_index(probs.argmax(1), labels))
        theta = float(theta_term(guide.theta_beta(slice(None)), guide.alpha(), PlateScale()))
        return Score(elbo=self.scale(per_subject) + theta, se=self.standard_error(per_subject),
                     per_subject=per_subject, ari=float(np.mean(aris)))

    def scale(self, per_subject) -> float:
        """Subset sum scaled to the cohort (unbiased for the cohort's sum of subject terms)."""
        return float(np.mean(per_subject)) * self.n_subjects

    def standard_error(self, per_subject) -> float:
        """Standard error of :meth:`scale` under sampling without replacement (0 for the whole cohort)."""
        n = len(per_subject)
        if n < 2 or n >= self.n_subjects:
            return 0.0
        return float(self.n_subjects * np.std(per_subject, ddof=1) / math.sqrt(n) * math.sqrt(1 - n / self.n_subjects))

    def difference_error(self, a: Score, b: Score) -> float:
        """Standard error of ``a.elbo - b.elbo`` (paired: the same subjects scored)."""
        return self.standard_error(np.asarray(a.per_subject) - np.asarray(b.per_subject))


def planted_labels(truth, store, subjects: np.ndarray) -> list[np.ndarray]:
    """Planted 0-based labels of store rows ``subjects`` on the store's vertices."""
    rows = np.asarray(store.vertex_index)
    return [truth.subject_labels[str(store.subjects[s]).removeprefix("sub-")][rows].astype(int) - 1
            for s in subjects]


@torch.no_grad()
def load_state(guide: ClosedThetaMeanField, *, lam: torch.Tensor, subjects: np.ndarray, m_psi: torch.Tensor,
               k_psi: torch.Tensor, m_nu: torch.Tensor, k_nu: torch.Tensor, mu: torch.Tensor, kappa: float,
               sigma: float, eps: float, counts: torch.Tensor) -> ClosedThetaMeanField:
    """Write a state of the variational family into ``guide`` (for scoring).

    Parameters
    ----------
    lam : Tensor of shape (len(subjects), N, K)
        q(y) of the listed subjects.
    subjects : ndarray of int
    m_psi, k_psi : Tensor of shape (len(subjects), K, D), (len(subjects), K)
    m_nu, k_nu : Tensor of shape (len(subjects), T, K, D), (len(subjects), T, K)
    mu : Tensor of shape (K, D)
    kappa, sigma, eps : float
    counts : Tensor of shape (N, K)
        Label counts over the whole cohort (q(theta) = Dirichlet(alpha + counts); alpha refit
        from them by type-II maximum likelihood, as every gradient fit does each epoch).
    """
    idx = torch.as_tensor(np.asarray(subjects, dtype=np.int64))
    guide.logits[idx] = torch.log(lam.float().clamp_min(1e-30))
    guide.m_psi_raw[idx] = m_psi.float()
    guide.log_k_psi[idx] = torch.log(k_psi.float())
    guide.m_nu_raw[idx] = m_nu.float()
    guide.log_k_nu[idx] = torch.log(k_nu.float())
    guide.mu_raw.copy_(mu.float())
    guide.mu.copy_(mu.float())
    for name, value in (("kappa", kappa), ("sigma", sigma), ("eps", eps)):
        guide.log_conc[name].fill_(math.log(float(value)))
    guide.counts.copy_(counts.double())
    guide.refit_theta_prior()
    return guide


@torch.no_grad()
def complete_points(points: dict[str, torch.Tensor], source, session_mask: torch.Tensor, s: int,
                    patches: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """Pyro's MAP point of subject ``s`` read as a state of the variational family.

    ``q(y)`` is the exact label posterior given the points (what enumeration sums over); q(nu)
    and q(psi) keep the points as mean directions, with the concentrations of the closed-form
    coordinate update: ``|kappa R_t + sigma psi|`` and ``|eps mu + sigma sum_t nu_t|``, where
    ``R_t`` are the label-weighted fingerprint sums.

    Returns
    -------
    dict with lam (N, K), m_psi (K, D), k_psi (K,), m_nu (T, K, D), k_nu (T, K).
    """
    kappa, sigma, eps = (float(points[k]) for k in ("kappa", "sigma", "eps"))
    nu, psi = points["nu"][s], points["psi"][s]
    log_theta = torch.log(points["theta"].clamp_min(1e-30))
    n_vertices, k_net = log_theta.shape
    lam = torch.zeros(n_vertices, k_net)
    sums = torch.zeros(nu.shape)
    for a, b in patches:
        x = source.get(np.array([s]), a, b)
        dots = (x.dot(nu[None]) * x.valid[..., None]).sum(1)[0]  # (V, K)
        lam[a:b] = torch.softmax(log_theta[a:b] + kappa * dots, dim=-1)
        sums += x.weighted_sums(lam[a:b][None])[0]
    present = session_mask[s].to(nu.dtype)[:, None, None]
    k_nu = (kappa * sums + sigma * psi[None]).norm(dim=-1)
    k_psi = (eps * points["mu"] + sigma * (nu * present).sum(0)).norm(dim=-1)
    return {"lam": lam, "m_psi": psi, "k_psi": k_psi, "m_nu": nu, "k_nu": k_nu}


__all__ = ["ClosedThetaMeanField", "Evaluator", "Score", "complete_points", "load_state", "planted_labels"]
