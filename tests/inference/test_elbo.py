"""Model pieces: ELBO terms, plate-scaled minibatch ELBO (unbiasedness), sampler, initialisation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pavi_parcel.inference.initialisation import initialise
from pavi_parcel.inference.optim import build_guide
from pavi_parcel.inference.passes import batch_elbo, full_elbo
from pavi_parcel.inference.stream import FingerprintSource
from pavi_parcel.model.hierarchy import (
    Concentrations,
    PlateScale,
    SubjectPosterior,
    fit_dirichlet_precision,
    local_elbo,
    project_sphere,
)
from pavi_parcel.model.planted import sample_dataset
from pavi_parcel.model.vmf import log_vmf_normalizer, sample_vmf
from pavi_parcel.settings.schema import FitSettings, ModelSettings
from pavi_parcel.simulate.planted import write_planted_store
from pavi_parcel.stores.fingerprints import FingerprintStore


@pytest.fixture(scope="module")
def four_subjects(planted_store):
    return planted_store(4, seed=3)


def test_sample_dataset_is_demeaned_unit_and_smooth():
    data = sample_dataset(3, 2, 5, grid=(16, 16), n_seeds=20, seed=1)
    assert data.x.shape == (3, 2, 256, 20)
    np.testing.assert_allclose(data.x.sum(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(data.x, axis=-1), 1.0, atol=1e-5)
    grid = data.group_labels.reshape(16, 16)
    same = np.mean(grid[:, 1:] == grid[:, :-1])
    assert same > 0.7  # spatially smooth labels
    assert 0.0 < np.mean(data.labels != data.group_labels) < 0.5  # subjects deviate, a little


def test_session_and_subject_terms_match_monte_carlo():
    """Closed-form E_q[log vMF(nu | psi, sigma)] + H[q] agrees with sampling from q."""
    gen = torch.Generator().manual_seed(0)
    d, dim, k_net = 9, 8.0, 3
    basis = torch.as_tensor(__import__("scipy.linalg", fromlist=["helmert"]).helmert(d), dtype=torch.float64)
    m_psi = project_sphere(torch.randn(1, k_net, d, generator=gen, dtype=torch.float64))
    m_nu = project_sphere(m_psi[:, None] + 0.3 * torch.randn(1, 2, k_net, d, generator=gen, dtype=torch.float64))
    q = SubjectPosterior(m_psi, torch.full((1, k_net), 20.0, dtype=torch.float64), m_nu,
                         torch.full((1, 2, k_net), 30.0, dtype=torch.float64), dim)
    mu = project_sphere(torch.randn(k_net, d, generator=gen, dtype=torch.float64))
    conc = Concentrations(*(torch.tensor(v, dtype=torch.float64) for v in (5.0, 15.0, 10.0)))
    xe = torch.zeros(1, 2, 1, k_net, dtype=torch.float64)
    lam = torch.full((1, 1, k_net), 1.0 / k_net, dtype=torch.float64)
    terms = local_elbo(xe, torch.zeros(1, 2, 1, dtype=torch.bool), lam, lam.log(), lam.log()[0], q, mu, conc,
                       torch.ones(1, 2, dtype=torch.bool), PlateScale())
    n = 20000
    to_sub = lambda v: v @ basis.T  # noqa: E731  coordinates in the demeaned subspace
    psi = sample_vmf(to_sub(m_psi), q.k_psi, n, gen)  # (n, 1, K, dim)
    nu = sample_vmf(to_sub(m_nu), q.k_nu, n, gen)  # (n, 1, 2, K, dim)
    logc = lambda k: log_vmf_normalizer(k, dim)  # noqa: E731
    log_p_nu = logc(conc.sigma) + conc.sigma * (nu * psi[:, :, None]).sum(-1)
    log_q_nu = logc(q.k_nu) + q.k_nu * (nu * to_sub(m_nu)).sum(-1)
    log_p_psi = logc(conc.eps) + conc.eps * (psi * to_sub(mu)).sum(-1)
    log_q_psi = logc(q.k_psi) + q.k_psi * (psi * to_sub(m_psi)).sum(-1)
    mc_ses = (log_p_nu - log_q_nu).sum((1, 2, 3))
    mc_sub = (log_p_psi - log_q_psi).sum((1, 2))
    for closed, mc in ((terms.session, mc_ses), (terms.subject, mc_sub)):
        assert abs(float(closed) - float(mc.mean())) < 4 * float(mc.std()) / np.sqrt(n) + 1e-6


@pytest.mark.parametrize("method", ["pavi_e", "svi"])
def test_minibatch_elbo_is_unbiased(four_subjects, method):
    """The plate-scaled minibatch ELBO averages exactly to the full ELBO over all batches,
    and a Monte-Carlo average over random batches lies within its standard error."""
    path, _ = four_subjects
    store = FingerprintStore(path)
    source = FingerprintSource(store, 1.0, torch.device("cpu"))
    model = ModelSettings(n_networks=4, theta_prior=0.5)
    fit = FitSettings(method=method, batch_vertices=40, batch_subjects=2)
    guide = build_guide(initialise(source, model, fit, 0), 4, 2, model, fit, 0)
    smask = torch.as_tensor(store.session_mask)
    exact = full_elbo(guide, source, smask)
    n_patch = len(guide.patches)
    scale = PlateScale(subject=4 / 2, vertex=float(n_patch))
    estimates = []
    with torch.no_grad():
        for subj in itertools.combinations(range(4), 2):
            for p in range(n_patch):
                x = source.get(np.array(subj), *guide.patches[p])
                terms = batch_elbo(guide, x, torch.tensor(subj), p, smask[list(subj)], scale)[0]
                estimates.append(float(terms.total))
    estimates = np.array(estimates)
    assert estimates.mean() == pytest.approx(exact, rel=1e-6)
    rng = np.random.default_rng(0)
    draws = rng.choice(len(estimates), 200)
    se = estimates.std() / np.sqrt(200)
    assert abs(estimates[draws].mean() - exact) < 4 * se
    assert estimates.std() > 0  # the check is not vacuous
    store.close()


def test_dirichlet_precision_recovers_planted_value():
    rng = np.random.default_rng(0)
    base = np.array([0.5, 0.3, 0.2])
    for a0 in (0.5, 5.0):
        theta = rng.dirichlet(a0 * base, size=3000)
        counts = np.stack([rng.multinomial(20, t) for t in theta])
        assert fit_dirichlet_precision(counts, base) == pytest.approx(a0, rel=0.15)


@pytest.mark.parametrize("top_fraction", [0.0, 0.1])
def test_factored_blocks_match_store_fingerprints(tmp_path, top_fraction):
    """Blocks used by the fit (bits kept as 0/1 with demeaning folded into the products)
    give the same fingerprints, dot products and weighted sums as the store's reader."""
    data = sample_dataset(2, 2, 3, grid=(6, 6), n_seeds=21, seed=2)
    store = FingerprintStore(write_planted_store(tmp_path / "fp.h5", data, top_fraction=top_fraction))
    block = FingerprintSource(store, 0.0, torch.device("cpu")).get(np.array([0, 1]), 5, 30)
    dense = torch.as_tensor(store.read_subjects([0, 1], np.arange(5, 30)))
    np.testing.assert_allclose(block.dense(), dense, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(2, 2, 3, 21, generator=gen)
    lam = torch.softmax(torch.randn(2, 25, 3, generator=gen), -1)
    np.testing.assert_allclose(block.dot(e), dense @ e.transpose(-1, -2), atol=1e-4)
    np.testing.assert_allclose(block.weighted_sums(lam), torch.einsum("bvk,btvd->btkd", lam, dense), atol=1e-4)
    assert bool(block.valid.all())
    store.close()
