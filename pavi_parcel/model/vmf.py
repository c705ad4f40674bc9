"""Von Mises-Fisher numerics: stable log-Bessel, normaliser, mean resultant length, sampling.

A vMF distribution on the unit sphere S^{p-1} of R^p has density
``C_p(kappa) exp(kappa mu.x)`` with

    log C_p(kappa) = (p/2 - 1) log kappa - (p/2) log(2 pi) - log I_{p/2-1}(kappa).

Here ``dim`` is always ``p``, the dimension of the ambient space whose unit sphere holds the
data. Demeaned fingerprints of D seeds sum to zero, so they live on the unit sphere of a
(D - 1)-dimensional subspace: callers modelling them pass ``dim = D - 1``.

Numerics
--------
``log I_v(kappa)`` is evaluated without overflow or underflow for orders up to several
thousands and any ``kappa >= 0``:

* at an order ``w >= 32`` by Debye's uniform asymptotic expansion with eight correction terms,
  summed as one polynomial in ``t = 1 / sqrt(1 + (kappa / w)^2)`` when the order is a number;
* at a lower order ``v`` by shifting up to ``w = v + M >= 32``, evaluating the ratio
  ``rho_w = I_{w+1} / I_w`` there, and running the stable backward recurrence
  ``rho_{w-1} = kappa / (2 w + kappa rho_w)``, which also gives
  ``log I_{w-1} - (w-1) log kappa = log I_w - w log kappa + log(2 w + kappa rho_w)``.

The core works with ``log I_v(kappa) - v log kappa``, which stays finite at ``kappa = 0``,
so the normaliser of the uniform distribution (``kappa = 0``) is exact and every function
has finite gradients for ``kappa`` from 0 to 1e5 and beyond. Against mpmath, for D from 2 to
5,000 and ``kappa`` from 1e-3 to 1e5, errors are at the level of float64 rounding (``log I``
within 1e-13 absolute or 1e-15 relative, the ratio within 1e-14 relative). All operations are ordinary
differentiable torch operations (autograd gives ``d log I_v / d kappa = rho_v + v / kappa``).

Dtypes: inputs of any floating dtype (or numpy arrays / Python numbers) are accepted; the
Bessel computations always run in float64 and results are cast back to the dtype of
``kappa`` when it is a floating tensor (float32 in, float32 out); numpy arrays, Python
numbers and integer tensors give float64 tensors.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
import torch

Tensorish = torch.Tensor | np.ndarray | float | int

_MIN_ORDER = 32.0  # Debye expansion is used at orders >= this; lower orders recur down
_N_TERMS = 8  # Debye correction terms u_1 .. u_8


def _debye_polynomials(n_terms: int) -> list[list[float]]:
    """Coefficients (ascending powers of t) of Debye's polynomials u_0 .. u_n.

    u_{k+1}(t) = t^2 (1 - t^2) u_k'(t) / 2 + (1/8) int_0^t (1 - 5 s^2) u_k(s) ds.
    """
    polys = [[Fraction(1)]]
    for _ in range(n_terms):
        p = polys[-1]
        nxt = [Fraction(0)] * (len(p) + 4)
        for i in range(1, len(p)):  # derivative term
            nxt[i + 1] += Fraction(i) * p[i] / 2
            nxt[i + 3] -= Fraction(i) * p[i] / 2
        for i, c in enumerate(p):  # integral term
            nxt[i + 1] += c / (8 * (i + 1))
            nxt[i + 3] -= 5 * c / (8 * (i + 3))
        while nxt and nxt[-1] == 0:
            nxt.pop()
        polys.append(nxt)
    return [[float(c) for c in p] for p in polys]


_U = _debye_polynomials(_N_TERMS)
_DU = [[i * c for i, c in enumerate(p)][1:] or [0.0] for p in _U]


def _horner(coefs: list[float], t: torch.Tensor) -> torch.Tensor:
    out = torch.full_like(t, coefs[-1])
    for c in reversed(coefs[:-1]):
        out = out * t + c
    return out


def _as_tensor(x: Tensorish, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    device = like.device if like is not None else None
    return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)


def _out_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float64


@functools.lru_cache(maxsize=256)
def _combined_series(w: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients in t of ``S(t) = 1 + sum_k u_k(t) / w^k`` and of ``S'(t)`` for a fixed order."""
    coefs = [0.0] * len(_U[-1])
    dcoefs = [0.0] * len(_U[-1])
    for k in range(_N_TERMS + 1):
        scale = w ** -k
        for i, c in enumerate(_U[k]):
            coefs[i] += c * scale
        for i, c in enumerate(_DU[k]):
            dcoefs[i] += c * scale
    return tuple(coefs), tuple(dcoefs)


def _debye(w: float | torch.Tensor, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Debye expansion at order ``w`` (>= _MIN_ORDER): ``(log I_w - w log kappa, I_{w+1} / I_w)``."""
    z = kappa / w
    root = torch.sqrt(1.0 + z * z)
    t = 1.0 / root
    if isinstance(w, float):  # one polynomial in t: the common, fast case
        coefs, dcoefs = _combined_series(w)
        series, dseries = _horner(list(coefs), t), _horner(list(dcoefs), t)
        log_w = math.log(w)
        half_log_2pi_w = 0.5 * math.log(2.0 * math.pi * w)
    else:
        series, dseries = torch.ones_like(t), torch.zeros_like(t)
        power = torch.ones_like(w)
        for k in range(1, _N_TERMS + 1):
            power = power / w
            series = series + _horner(_U[k], t) * power
            dseries = dseries + _horner(_DU[k], t) * power
        log_w = torch.log(w)
        half_log_2pi_w = 0.5 * torch.log(2.0 * math.pi * w)
    # log I_w(w z) = -log(2 pi w)/2 + w eta(z) - log(1 + z^2)/4 + log S(t),
    # eta = sqrt(1 + z^2) + log(z / (1 + sqrt(1 + z^2))); the w log(kappa) part cancels exactly.
    log_scaled = (w * (root - torch.log1p(root) - log_w) - half_log_2pi_w
                  - 0.25 * torch.log1p(z * z) + torch.log(series))
    # rho = d log I_w / d kappa - w / kappa, differentiating the expansion term by term.
    rho = z / (1.0 + root) - z * t * t / (2.0 * w) - z * t ** 3 * dseries / (w * series)
    return log_scaled, rho


def _log_iv_scaled_and_ratio(order: float | torch.Tensor,
                             kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log I_v(kappa) - v log kappa, I_{v+1}(kappa) / I_v(kappa))`` in float64, broadcast."""
    if isinstance(order, float):
        low = order
    else:
        order, kappa = torch.broadcast_tensors(order, kappa)
        low = float(order.min()) if order.numel() else _MIN_ORDER
    n_steps = max(0, math.ceil(_MIN_ORDER - low))
    top = order + n_steps
    log_scaled, rho = _debye(top, kappa)
    # Backward recurrence from order v + M down to v (stable: I_v is recessive as v grows).
    for j in range(n_steps):
        w = top - j  # rho currently holds rho_w; produce rho_{w-1}
        denom = 2.0 * w + kappa * rho
        log_scaled = log_scaled + torch.log(denom)
        rho = kappa / denom
    return log_scaled, rho


def _prepare(order: Tensorish, kappa: Tensorish) -> tuple[float | torch.Tensor, torch.Tensor, torch.dtype]:
    kappa_t = _as_tensor(kappa)
    dtype = _out_dtype(kappa_t)
    if isinstance(order, (int, float, np.integer, np.floating)):
        order_out: float | torch.Tensor = float(order)
    else:
        order_out = _as_tensor(order, like=kappa_t).to(device=kappa_t.device, dtype=torch.float64)
    return order_out, kappa_t.to(torch.float64), dtype


def log_bessel_iv(order: Tensorish, kappa: Tensorish) -> torch.Tensor:
    """Logarithm of the modified Bessel function of the first kind, ``log I_order(kappa)``.

    Parameters
    ----------
    order : float or Tensor
        Order ``v >= 0`` (for a vMF on S^{p-1}, ``v = p/2 - 1``); broadcast against ``kappa``.
    kappa : float, ndarray or Tensor
        Argument ``kappa > 0`` (``kappa = 0`` gives ``-inf`` for ``v > 0`` and 0 for ``v = 0``).

    Returns
    -------
    Tensor of the broadcast shape, dtype of ``kappa`` (float64 for non-tensor input)
        Differentiable in ``kappa``; stable for orders up to several thousands and ``kappa``
        from 1e-3 to 1e5 and beyond.
    """
    order_t, kappa_t, dtype = _prepare(order, kappa)
    log_scaled, _ = _log_iv_scaled_and_ratio(order_t, kappa_t)
    order_t = torch.as_tensor(order_t, dtype=torch.float64, device=kappa_t.device)
    return (log_scaled + torch.special.xlogy(order_t, kappa_t)).to(dtype)


def log_vmf_normalizer(kappa: Tensorish, dim: float) -> torch.Tensor:
    """Log normaliser of the vMF density on the unit sphere of R^dim.

    ``log C_dim(kappa) = (dim/2 - 1) log kappa - (dim/2) log(2 pi) - log I_{dim/2-1}(kappa)``,
    finite and smooth down to ``kappa = 0`` (the uniform distribution).

    Parameters
    ----------
    kappa : float, ndarray or Tensor
        Concentration(s), ``>= 0``.
    dim : float
        Ambient dimension ``p`` of the sphere S^{p-1} (``p >= 2``). For demeaned fingerprints
        with D seeds, pass ``dim = D - 1``.

    Returns
    -------
    Tensor of the shape of ``kappa``, dtype of ``kappa`` (float64 for non-tensor input)
    """
    order_t, kappa_t, dtype = _prepare(dim / 2.0 - 1.0, kappa)
    log_scaled, _ = _log_iv_scaled_and_ratio(order_t, kappa_t)
    return (-(dim / 2.0) * math.log(2.0 * math.pi) - log_scaled).to(dtype)


def mean_resultant_length(kappa: Tensorish, dim: float) -> torch.Tensor:
    """Mean resultant length ``A_dim(kappa) = I_{dim/2}(kappa) / I_{dim/2-1}(kappa) = E[mu.x]``.

    Parameters
    ----------
    kappa : float, ndarray or Tensor
        Concentration(s), ``>= 0``.
    dim : float
        Ambient dimension ``p`` (see :func:`log_vmf_normalizer`).

    Returns
    -------
    Tensor of the shape of ``kappa``, values in [0, 1), differentiable
        Also ``d log I_{dim/2-1} / d kappa - (dim/2 - 1) / kappa``.
    """
    order_t, kappa_t, dtype = _prepare(dim / 2.0 - 1.0, kappa)
    _, rho = _log_iv_scaled_and_ratio(order_t, kappa_t)
    return rho.to(dtype)


def vmf_log_density(x: torch.Tensor, mu: torch.Tensor, kappa: Tensorish,
                    dim: float | None = None) -> torch.Tensor:
    """Log density of unit vectors under vMF(mu, kappa).

    Parameters
    ----------
    x : Tensor of shape (..., D)
        Unit vectors.
    mu : Tensor of shape (..., D)
        Unit mean directions, broadcast against ``x``.
    kappa : float or Tensor
        Concentration(s), broadcast against ``x.shape[:-1]``.
    dim : float, optional
        Ambient dimension of the sphere; ``x.shape[-1]`` by default. Pass ``D - 1`` for
        demeaned fingerprints.

    Returns
    -------
    Tensor of shape broadcast(x.shape[:-1], mu.shape[:-1], kappa.shape)
    """
    p = float(x.shape[-1]) if dim is None else float(dim)
    kappa_t = _as_tensor(kappa, like=x).to(device=x.device)
    dot = (x * mu).sum(-1)
    return (log_vmf_normalizer(kappa_t, p).to(dot.dtype) + kappa_t.to(dot.dtype) * dot)


def vmf_entropy(kappa: Tensorish, dim: float) -> torch.Tensor:
    """Differential entropy of a vMF: ``-log C_dim(kappa) - kappa A_dim(kappa)``.

    Parameters
    ----------
    kappa : float, ndarray or Tensor
    dim : float
        Ambient dimension (see :func:`log_vmf_normalizer`).

    Returns
    -------
    Tensor of the shape of ``kappa``
    """
    order_t, kappa_t, dtype = _prepare(dim / 2.0 - 1.0, kappa)
    log_scaled, rho = _log_iv_scaled_and_ratio(order_t, kappa_t)
    log_c = -(dim / 2.0) * math.log(2.0 * math.pi) - log_scaled
    return (-log_c - kappa_t * rho).to(dtype)


def estimate_concentration(rbar: Tensorish, dim: float, newton_steps: int = 2):
    """Maximum-likelihood concentration from a mean resultant length.

    Banerjee et al. (2005) approximation ``kappa = r (p - r^2) / (1 - r^2)`` refined by Newton
    steps on ``A_p(kappa) = r`` with ``A_p'(kappa) = 1 - A^2 - (p - 1) A / kappa``.

    Parameters
    ----------
    rbar : float, ndarray or Tensor
        Mean resultant length(s) in [0, 1); clipped to [0, 1 - 1e-12].
    dim : float
        Ambient dimension ``p`` (``D - 1`` for demeaned fingerprints).
    newton_steps : int, default 2

    Returns
    -------
    Same type as ``rbar`` (ndarray in, ndarray out; Tensor in, Tensor out; float in, float out)
    """
    was_tensor = isinstance(rbar, torch.Tensor)
    was_scalar = np.isscalar(rbar)
    r_in = _as_tensor(rbar)
    dtype = _out_dtype(r_in)
    r = r_in.detach().to(torch.float64).clamp(0.0, 1.0 - 1e-12)
    p = float(dim)
    kappa = r * (p - r * r) / (1.0 - r * r)
    for _ in range(newton_steps):
        a = mean_resultant_length(kappa, p)
        safe = kappa.clamp_min(1e-300)
        slope = 1.0 - a * a - (p - 1.0) * torch.where(kappa > 0, a / safe, torch.full_like(a, 1.0 / p))
        step = (a - r) / slope.clamp_min(1e-300)
        kappa = (kappa - step).clamp_min(0.0)
    if was_tensor:
        return kappa.to(device=r_in.device, dtype=dtype)
    out = kappa.cpu().numpy()
    return float(out) if was_scalar else out.astype(np.asarray(rbar).dtype if np.asarray(rbar).dtype.kind == "f"
                                                     else np.float64)


def sample_vmf(mu: torch.Tensor, kappa: Tensorish, n: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw vMF samples with Wood's (1994) rejection algorithm, vectorised.

    Parameters
    ----------
    mu : Tensor of shape (..., dim)
        Unit mean directions (``dim >= 2``).
    kappa : float or Tensor
        Concentration(s) ``>= 0``, broadcast against ``mu.shape[:-1]``.
    n : int
        Number of draws per distribution.
    generator : torch.Generator, optional
        Source of randomness; draws are made on its device and moved to ``mu``'s device.

    Returns
    -------
    Tensor of shape (n, ..., dim), dtype and device of ``mu``
        Unit vectors.
    """
    dim = mu.shape[-1]
    if dim < 2:
        raise ValueError("sample_vmf needs dim >= 2")
    gen_device = generator.device if generator is not None else mu.device
    mu64 = mu.detach().to(device=gen_device, dtype=torch.float64)
    mu64 = mu64 / mu64.norm(dim=-1, keepdim=True)
    batch = mu64.shape[:-1]
    kappa_t = _as_tensor(kappa).detach().to(device=gen_device, dtype=torch.float64)
    kappa_t = torch.broadcast_to(kappa_t, batch).expand((n,) + tuple(batch)).reshape(-1)
    m = kappa_t.numel()
    p1 = float(dim - 1)
    b = p1 / (2.0 * kappa_t + torch.sqrt(4.0 * kappa_t ** 2 + p1 ** 2))
    x0 = (1.0 - b) / (1.0 + b)
    c = kappa_t * x0 + p1 * torch.log1p(-x0 * x0)
    w = torch.empty(m, dtype=torch.float64, device=gen_device)
    one_minus_w2 = torch.empty_like(w)
    pending = torch.arange(m, device=gen_device)
    while pending.numel():
        k = pending.numel()
        g = torch.randn(k, dim, dtype=torch.float64, device=gen_device, generator=generator)
        z = 0.5 * (1.0 + g[:, 0] / g.norm(dim=1))  # Beta((dim-1)/2, (dim-1)/2)
        bb = b[pending]
        den = 1.0 - (1.0 - bb) * z
        w_try = (1.0 - (1.0 + bb) * z) / den
        u = torch.rand(k, dtype=torch.float64, device=gen_device, generator=generator)
        accept = (kappa_t[pending] * w_try + p1 * torch.log1p(-x0[pending] * w_try) - c[pending]
                  >= torch.log(u))
        idx = pending[accept]
        w[idx] = w_try[accept]
        one_minus_w2[idx] = (4.0 * bb * z * (1.0 - z) / (den * den))[accept]
        pending = pending[~accept]
    tangent = torch.randn(m, dim, dtype=torch.float64, device=gen_device, generator=generator)
    tangent[:, 0] = 0.0
    tangent = tangent / tangent.norm(dim=1, keepdim=True)
    x = tangent * torch.sqrt(one_minus_w2.clamp_min(0.0))[:, None]
    x[:, 0] = w
    # Householder reflection sending e_1 to mu.
    mu_flat = mu64.expand((n,) + tuple(mu64.shape)).reshape(m, dim)
    u_vec = -mu_flat.clone()
    u_vec[:, 0] += 1.0
    norm2 = (u_vec * u_vec).sum(1, keepdim=True)
    proj = (u_vec * x).sum(1, keepdim=True)
    x = torch.where(norm2 > 1e-30, x - 2.0 * u_vec * proj / norm2.clamp_min(1e-30), x)
    return x.reshape((n,) + tuple(mu64.shape)).to(device=mu.device, dtype=mu.dtype)


__all__ = ["log_bessel_iv", "log_vmf_normalizer", "mean_resultant_length", "vmf_log_density", "vmf_entropy",
           "estimate_concentration", "sample_vmf"]
