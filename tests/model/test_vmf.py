"""vMF numerics against scipy / mpmath references, closed forms and sampling statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sp
import torch

from pavi_parcel.model.vmf import (
    estimate_concentration,
    log_bessel_iv,
    log_vmf_normalizer,
    mean_resultant_length,
    sample_vmf,
    vmf_entropy,
    vmf_log_density,
)

mpmath = pytest.importorskip("mpmath")

DIMS = [2, 3, 4, 10, 63, 64, 65, 100, 1175, 1800, 5000]
KAPPAS = [1e-3, 1e-2, 0.5, 1.0, 7.0, 30.0, 100.0, 587.0, 1e3, 1e4, 1e5]


def _reference_log_iv(order: float, kappa: float) -> float:
    """log I_order(kappa): scipy's scaled Bessel where it neither under- nor overflows, else mpmath."""
    scaled = sp.ive(order, kappa)
    if 1e-280 < scaled < np.inf:
        return math.log(scaled) + kappa
    with mpmath.workdps(30):
        return float(mpmath.log(mpmath.besseli(order, kappa, maxterms=10**6)))


def _reference_ratio(order: float, kappa: float) -> float:
    num, den = sp.ive(order + 1, kappa), sp.ive(order, kappa)
    if 1e-280 < num and 1e-280 < den < np.inf:
        return num / den
    with mpmath.workdps(30):
        return float(mpmath.besseli(order + 1, kappa, maxterms=10**6)
                     / mpmath.besseli(order, kappa, maxterms=10**6))


@pytest.mark.parametrize("dim", DIMS)
def test_log_bessel_matches_references(dim):
    order = dim / 2 - 1
    got = log_bessel_iv(order, torch.tensor(KAPPAS, dtype=torch.float64)).numpy()
    ref = np.array([_reference_log_iv(order, k) for k in KAPPAS])
    # absolute error of log I is the relative error of I
    np.testing.assert_array_less(np.abs(got - ref), 1e-8)
    np.testing.assert_array_less(np.abs(got - ref), 1e-12 * np.maximum(1.0, np.abs(ref)) + 1e-13)


@pytest.mark.parametrize("dim", [2, 3, 10, 64, 100, 1175, 1800, 5000])
def test_mean_resultant_length_matches_references(dim):
    kappas = [1e-3, 0.5, 7.0, 100.0, 1e3, 1e4, 1e5]
    got = mean_resultant_length(torch.tensor(kappas, dtype=torch.float64), dim).numpy()
    ref = np.array([_reference_ratio(dim / 2 - 1, k) for k in kappas])
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_log_bessel_broadcasts_orders_and_kappas():
    orders = torch.tensor([[0.0], [0.5], [586.5], [2499.0]], dtype=torch.float64)
    kappas = torch.tensor([1e-3, 1.0, 1e4], dtype=torch.float64)
    got = log_bessel_iv(orders, kappas)
    assert got.shape == (4, 3)
    for i, v in enumerate(orders[:, 0].tolist()):
        np.testing.assert_allclose(got[i].numpy(), log_bessel_iv(v, kappas).numpy(), rtol=1e-13)


@pytest.mark.parametrize("dim", [2, 3, 10, 1175, 1800, 5000])
def test_gradient_is_ratio_plus_order_over_kappa(dim):
    order = dim / 2 - 1
    kappa = torch.tensor([1e-3, 0.3, 20.0, 900.0, 1e5], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_bessel_iv(order, kappa).sum(), kappa)
    ref = np.array([_reference_ratio(order, k) + order / k for k in kappa.tolist()])
    assert torch.isfinite(grad).all()
    np.testing.assert_allclose(grad.numpy(), ref, rtol=1e-9)


@pytest.mark.parametrize("dim", [2, 3, 1174, 5000])
def test_normalizer_entropy_and_ratio_have_finite_gradients_from_zero_to_1e5(dim):
    kappa = torch.tensor([0.0, 1e-3, 1e5], dtype=torch.float64, requires_grad=True)
    for fn in (log_vmf_normalizer, mean_resultant_length, vmf_entropy):
        (grad,) = torch.autograd.grad(fn(kappa, dim).sum(), kappa, create_graph=True)
        assert torch.isfinite(grad).all(), fn.__name__
        (grad2,) = torch.autograd.grad(grad.sum(), kappa)
        assert torch.isfinite(grad2).all(), fn.__name__
    # d log C / d kappa = -A
    (grad,) = torch.autograd.grad(log_vmf_normalizer(kappa, dim).sum(), kappa)
    np.testing.assert_allclose(grad.numpy(), -mean_resultant_length(kappa.detach(), dim).numpy(),
                               rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("dim", [2, 3, 10, 1174, 5000])
def test_normalizer_at_zero_is_uniform_on_the_sphere(dim):
    log_area = math.log(2) + (dim / 2) * math.log(math.pi) - math.lgamma(dim / 2)
    got = log_vmf_normalizer(torch.tensor([0.0, 1e-12]), dim)
    np.testing.assert_allclose(got.numpy(), -log_area, rtol=1e-6)
    np.testing.assert_allclose(vmf_entropy(0.0, dim).item(), log_area, rtol=1e-12)
    assert mean_resultant_length(0.0, dim).item() == 0.0


def test_closed_forms_on_the_two_sphere():
    kappa = np.array([1e-3, 0.7, 5.0, 40.0, 600.0])
    log_c = np.log(kappa) - np.log(4 * np.pi) - (kappa + np.log1p(-np.exp(-2 * kappa)) - np.log(2))
    a = 1 / np.tanh(kappa) - 1 / kappa
    np.testing.assert_allclose(log_vmf_normalizer(kappa, 3).numpy(), log_c, rtol=1e-12)
    np.testing.assert_allclose(mean_resultant_length(kappa, 3).numpy(), a, rtol=1e-9)
    np.testing.assert_allclose(vmf_entropy(kappa, 3).numpy(), -log_c - kappa * a, rtol=1e-9)


def test_circle_density_integrates_to_one():
    angles = torch.linspace(0, 2 * math.pi, 20001, dtype=torch.float64)[:-1]
    x = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)
    mu = torch.tensor([0.6, 0.8], dtype=torch.float64)
    for kappa in (0.0, 2.0, 300.0):
        total = vmf_log_density(x, mu, kappa).exp().sum() * (2 * math.pi / angles.numel())
        assert abs(total.item() - 1.0) < 1e-8


def test_density_dim_override_and_float32():
    gen = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen), dim=-1)
    mu = x[0]
    kappa = torch.tensor(12.0)
    full = vmf_log_density(x, mu, kappa)
    sub = vmf_log_density(x, mu, kappa, dim=7)
    assert full.dtype == torch.float32 and full.shape == (5,)
    delta = (log_vmf_normalizer(12.0, 8) - log_vmf_normalizer(12.0, 7)).item()
    np.testing.assert_allclose((full - sub).numpy(), delta, rtol=1e-5)


def test_float32_inputs_are_computed_in_float64():
    kappa64 = torch.tensor([1e-3, 3.0, 2e4, 1e5], dtype=torch.float64)
    kappa32 = kappa64.float()
    for fn in (log_vmf_normalizer, mean_resultant_length, vmf_entropy):
        out = fn(kappa32, 1174)
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        np.testing.assert_allclose(out.numpy(), fn(kappa32.double(), 1174).float().numpy(), rtol=1e-7)


@pytest.mark.parametrize("dim", [3, 64, 1174])
def test_estimate_concentration_inverts_the_mean_resultant_length(dim):
    kappa = np.array([1e-2, 1.0, 30.0, 500.0, 5e3, 1e5])
    rbar = mean_resultant_length(kappa, dim).numpy()
    est = estimate_concentration(rbar, dim)
    assert isinstance(est, np.ndarray)
    np.testing.assert_allclose(est, kappa, rtol=1e-6)
    est_t = estimate_concentration(torch.tensor(rbar, dtype=torch.float32), dim)
    assert isinstance(est_t, torch.Tensor) and est_t.dtype == torch.float32
    assert isinstance(estimate_concentration(0.3, dim), float)
    assert estimate_concentration(0.0, dim) == 0.0


@pytest.mark.parametrize("dim", [2, 3, 10, 300])
def test_wood_sampler_statistics(dim):
    gen = torch.Generator().manual_seed(0)
    mu = torch.nn.functional.normalize(torch.randn(3, dim, generator=gen, dtype=torch.float64), dim=-1)
    kappa = torch.tensor([0.5, 40.0, 3000.0], dtype=torch.float64)
    n = 4000
    x = sample_vmf(mu, kappa, n, generator=gen)
    assert x.shape == (n, 3, dim)
    np.testing.assert_allclose(x.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    cos = (x * mu).sum(-1)
    a = mean_resultant_length(kappa, dim)
    se = cos.std(0) / math.sqrt(n)
    assert ((cos.mean(0) - a).abs() < 5 * se + 1e-12).all()
    # the mean direction of the samples is mu
    mean_dir = torch.nn.functional.normalize(x.mean(0), dim=-1)
    assert ((mean_dir * mu).sum(-1)[1:] > 0.99).all()


def test_sampler_is_reproducible_and_uniform_at_zero():
    mu = torch.tensor([[0.0, 0.0, 1.0]])
    a = sample_vmf(mu, 5.0, 50, generator=torch.Generator().manual_seed(3))
    b = sample_vmf(mu, 5.0, 50, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float32
    u = sample_vmf(mu, 0.0, 20000, generator=torch.Generator().manual_seed(4)).double()
    assert u.mean(0).abs().max() < 0.03  # uniform on the sphere: mean 0, sd 1/sqrt(3 n)
    np.testing.assert_allclose((u ** 2).mean(0).numpy().ravel(), 1 / 3, atol=0.02)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    kappa = torch.tensor([1e-3, 5.0, 1e5], dtype=torch.float64)
    for fn in (log_vmf_normalizer, mean_resultant_length):
        np.testing.assert_allclose(fn(kappa.cuda(), 1174).cpu().numpy(), fn(kappa, 1174).numpy(), rtol=1e-12)
    mu = torch.nn.functional.normalize(torch.randn(2, 50), dim=-1).cuda()
    x = sample_vmf(mu, torch.tensor([1.0, 100.0]).cuda(), 10,
                   generator=torch.Generator(device="cuda").manual_seed(0))
    assert x.is_cuda and x.shape == (10, 2, 50)
