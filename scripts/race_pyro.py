"""The MS-HBM written in Pyro, fitted with Pyro's own SVI: the off-the-shelf comparator of the race.

What a Pyro user would write for this model (the recipe of Pyro's Gaussian-mixture tutorial):

* the labels ``y_{s,n}`` are enumerated (``TraceEnum_ELBO``, ``infer={"enumerate": "parallel"}``),
  so Pyro sums them out exactly in every step;
* the continuous latents (subject profiles psi, session profiles nu, the spatial prior theta) get
  an ``AutoDelta`` guide (MAP point estimates), with Pyro's plate subsampling of subjects and vertex
  patches; mu and the concentrations are ``pyro.param`` point estimates, as in the package's model;
* a D-dimensional von Mises-Fisher distribution is written here as a Pyro distribution
  (:class:`SphereVMF`, log density only: a delta guide never samples from it).

theta needs a proper MAP: under the package's Dirichlet(alpha) with alpha < 1 the density is
unbounded at the corners, so the Pyro model uses Dirichlet(1 + 1), the one pseudo-count per network
of the package's VB-EM (:func:`pavi_parcel.model.baselines.fit_vbem`).

Only the race (``scripts/bench_race.py``) imports this module; ``pyro-ppl`` is a benchmark and
test dependency, not one of the package's.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import SVI, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value
from pyro.nn import PyroParam
from pyro.ops.indexing import Vindex

from pavi_parcel.model.hierarchy import project_sphere
from pavi_parcel.model.vmf import log_vmf_normalizer

#: MAP-proper Dirichlet parameter of theta per network (one pseudo-count, as VB-EM's theta_prior=1)
THETA_CONCENTRATION = 2.0


class SphereVMF(dist.TorchDistribution):
    """von Mises-Fisher on the unit sphere of the demeaned subspace of R^D (log density only).

    Parameters
    ----------
    loc : Tensor of shape (..., D)
        Mean directions (unit, demeaned).
    concentration : Tensor broadcastable to ``loc.shape[:-1]``
    sphere_dim : float
        D - 1, the dimension the normaliser uses.
    """

    arg_constraints = {"concentration": constraints.positive}
    support = constraints.sphere

    def __init__(self, loc: torch.Tensor, concentration: torch.Tensor, sphere_dim: float, validate_args=None):
        self.loc, self.concentration, self.sphere_dim = loc, concentration, float(sphere_dim)
        batch_shape = torch.broadcast_shapes(loc.shape[:-1], torch.as_tensor(concentration).shape)
        super().__init__(batch_shape, loc.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return SphereVMF(self.loc.expand(batch_shape + self.event_shape),
                         torch.as_tensor(self.concentration).expand(batch_shape), self.sphere_dim)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # a delta guide's point lives on the whole sphere of R^D: only its demeaned part is a profile
        cos = (self.loc * project_sphere(value)).sum(-1)
        return log_vmf_normalizer(self.concentration, self.sphere_dim).to(cos.dtype) + self.concentration * cos


class PyroRace:
    """The model, its AutoDelta guide and Pyro's SVI on one fingerprint store.

    Parameters
    ----------
    source : FingerprintSource
        Fingerprints, read as the package's fits read them.
    init : InitState
        The race's shared start: mu, concentrations, patches, group labels.
    start : SubjectPosterior
        Starting directions of every subject (batch of all subjects), from the same start.
    session_mask : Tensor of bool, shape (S, T)
    lr : float
        Adam learning rate (``pyro.optim.Adam``).
    batch_subjects : int
        Subjects per step (the package's ``fit.batch_subjects``); one vertex patch per step.
    """

    def __init__(self, source, init, start, session_mask: torch.Tensor, lr: float, batch_subjects: int):
        pyro.clear_param_store()
        self.source, self.init, self.smask = source, init, session_mask
        self.n_subjects, self.n_sessions = session_mask.shape
        self.n_networks, self.n_seeds = init.mu.shape
        self.n_vertices = int(init.patches[-1][1])
        self.dim = float(init.dim)
        self.batch = min(batch_subjects, self.n_subjects)
        self._block, self._table = None, None
        theta0 = torch.as_tensor(init.initial_labels(self.n_networks), dtype=torch.float32)
        start_values = {"psi": start.m_psi.detach().clone()[:, None], "nu": start.m_nu.detach().clone(),
                        "theta": theta0 / theta0.sum(-1, keepdim=True)}
        first = np.arange(self.batch)
        a, b = init.patches[0]
        on_first = {"psi": start_values["psi"][first], "nu": start_values["nu"][first],
                    "theta": start_values["theta"][a:b]}
        self.guide = AutoDelta(pyro.poutine.block(self.model, hide=["y"]), create_plates=self.plates,
                               init_loc_fn=init_to_value(values=on_first))
        self._block = source.get(first, a, b)
        self.guide(torch.as_tensor(first), 0)  # Pyro creates a guide's parameters on its first call
        self._block = None
        supports = {"psi": constraints.sphere, "nu": constraints.sphere, "theta": constraints.simplex}
        for name, value in start_values.items():  # then every subject and vertex starts from the shared start
            setattr(self.guide, name, PyroParam(value, supports[name], event_dim=1 if name == "theta" else 2))
        self.svi = SVI(self.model, self.guide, pyro.optim.Adam({"lr": lr}),
                       loss=TraceEnum_ELBO(max_plate_nesting=2))

    # ------------------------------------------------------------------ the model
    def plates(self, subj: torch.Tensor, patch: int) -> list:
        """The subsampled plates of a minibatch (the guide's parameters are indexed by them)."""
        a, b = self.init.patches[patch]
        return [pyro.plate("subjects", self.n_subjects, subsample=subj, dim=-2),
                pyro.plate("vertices", self.n_vertices, subsample=torch.arange(a, b), dim=-1)]

    def model(self, subj: torch.Tensor, patch: int):
        """One minibatch: subjects ``subj`` (B,) on the vertices of patch ``patch``."""
        conc = self.init.concentrations
        mu = project_sphere(pyro.param("mu", torch.as_tensor(self.init.mu, dtype=torch.float32),
                                       constraint=constraints.sphere))
        kappa = pyro.param("kappa", torch.tensor(float(conc["kappa"])), constraint=constraints.positive)
        sigma = pyro.param("sigma", torch.tensor(float(conc["sigma"])), constraint=constraints.positive)
        eps = pyro.param("eps", torch.tensor(float(conc["eps"])), constraint=constraints.positive)
        a, b = self.init.patches[patch]
        k, d = self.n_networks, self.n_seeds
        subjects, vertices = self.plates(subj, patch)
        with subjects:
            psi = pyro.sample("psi", SphereVMF(mu.expand(len(subj), 1, k, d), eps, self.dim).to_event(1))
            with pyro.plate("sessions", self.n_sessions, dim=-1), pyro.poutine.mask(mask=self.smask[subj]):
                nu = pyro.sample("nu", SphereVMF(project_sphere(psi).expand(-1, self.n_sessions, k, d), sigma,
                                                 self.dim).to_event(1))
        with vertices:
            theta = pyro.sample("theta", dist.Dirichlet(torch.full((k,), THETA_CONCENTRATION)))
            table = self.log_likelihood(subj, project_sphere(nu), kappa, a, b)  # (B, V, K)
            with subjects:
                y = pyro.sample("y", dist.Categorical(theta), infer={"enumerate": "parallel"})
                pyro.factor("x", Vindex(table)[..., y])

    def log_likelihood(self, subj: torch.Tensor, nu: torch.Tensor, kappa: torch.Tensor, a: int,
                       b: int) -> torch.Tensor:
        """``sum_t log vMF(x_{s,t,n} | nu_{s,t,l}, kappa)`` over present sessions, shape (B, V, K)."""
        x = self._block if self._block is not None else self.source.get(subj.numpy(), a, b)
        valid = x.valid.to(nu.dtype)  # (B, T, V)
        dots = x.dot(nu)  # (B, T, V, K)
        table = ((log_vmf_normalizer(kappa, self.dim) + kappa * dots) * valid[..., None]).sum(1)
        self._table = table.detach()
        return table

    # ------------------------------------------------------------------ training and read-out
    def step(self, subj: np.ndarray, patch: int) -> tuple[float, torch.Tensor]:
        """One SVI step on a minibatch.

        Returns
        -------
        loss : float
            Pyro's loss (the negative objective estimate of the minibatch, scaled to the plates).
        lam : Tensor of shape (B, V, K)
            The label posterior of the minibatch under the step's parameters (for theta's counts).
        """
        a, b = self.init.patches[patch]
        self._block = self.source.get(subj, a, b)  # read once per step
        try:
            loss = float(self.svi.step(torch.as_tensor(subj), patch))
        finally:
            self._block = None
        with torch.no_grad():
            log_theta = torch.log(self.guide.theta.detach()[a:b].clamp_min(1e-30))
            lam = torch.softmax(log_theta + self._table, dim=-1)
        return loss, lam

    @torch.no_grad()
    def point_estimates(self) -> dict[str, torch.Tensor]:
        """Current MAP values: psi (S, K, D), nu (S, T, K, D), theta (N, K), mu (K, D), kappa, sigma, eps."""
        locs = {name: getattr(self.guide, name).detach() for name in ("psi", "nu", "theta")}
        store = pyro.get_param_store()
        return {"psi": project_sphere(locs["psi"][:, 0]), "nu": project_sphere(locs["nu"]), "theta": locs["theta"],
                "mu": project_sphere(store["mu"].detach()), "kappa": store["kappa"].detach(),
                "sigma": store["sigma"].detach(), "eps": store["eps"].detach()}


__all__ = ["PyroRace", "SphereVMF", "THETA_CONCENTRATION"]
