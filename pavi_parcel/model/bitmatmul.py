"""Products of 0/1 fingerprint matrices with float matrices, in exact integer arithmetic on the CPU.

Binary fingerprints enter every fit through two products: ``b . e`` (bits times directions) and
``sum_n w_n b_n`` (weights times bits). On a CPU, float32 matrix products spend most of their time
moving the 0/1 matrix (4 bytes a bit once unpacked). Here the bits stay int8 (1 byte, and
``np.unpackbits`` output needs no cast) and the float factor is split into two int8 levels,

    f  ~=  s * hi + (s / 254) * lo,      hi, lo in [-127, 127],  s = max|f| / 127 per row,

so one ``torch._int_mm`` (int8 x int8 -> exact int32) of the bits with ``[hi; lo]`` gives the
product to within ``max|f| / 64516`` per term (a third level: ``/ 1.6e7``). On CPUs with int8
dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX) it is 2 to 3 times faster than float32 at
this package's shapes, and the unpacked bits take a quarter of the memory; on others (AVX2 alone)
``torch._int_mm`` is up to 20 times slower than float32, so :func:`integer_products_fast` times
both once per process, and where float32 is faster :func:`unpack_bits` gives float32 bits (and
the products cast int8 bits they are given).
"""

from __future__ import annotations

import functools
import logging
import time

import numpy as np
import torch

log = logging.getLogger(__name__)

#: ones in each byte value
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
#: ratio of the two quantisation steps: the residual of the first level is at most half a step
_LOW = 254.0


def count_ones(packed: np.ndarray) -> np.ndarray:
    """Ones of each packed 0/1 row (``np.packbits`` bytes on the last axis), as float32."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2: a vectorised popcount, 3x faster than the table
        return np.bitwise_count(packed).sum(-1, dtype=np.int32).astype(np.float32)
    return POPCOUNT[packed].sum(-1, dtype=np.int32).astype(np.float32)


def unpack_bits(packed: np.ndarray, count: int | None = None) -> torch.Tensor:
    """Packed bits (..., ceil(D/8)) as the 0/1 tensor (..., count) the CPU products take.

    int8 where integer products are fast (:func:`integer_products_fast`): ``np.unpackbits``
    output as is, no copy. float32 elsewhere, converted here once, not at every product (a
    fresh float32 copy costs more than the product itself). ``count=None`` keeps the zero
    padding (8 * ceil(D/8) columns).
    """
    bits = np.unpackbits(packed, axis=-1, count=count)
    return torch.from_numpy(bits.view(np.int8) if integer_products_fast() else bits.astype(np.float32))


def _levels(f: torch.Tensor, dim: int, n_levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``f`` along ``dim`` into ``n_levels`` int8 levels, stacked on ``dim``, and their steps.

    Each level quantises the residual of the previous one with a step 254 times finer.

    Returns
    -------
    levels : Tensor of int8, ``f``'s shape with ``dim`` multiplied by ``n_levels``
    steps : Tensor of float32, ``levels``' shape with the reduced axis (the other of the last two) of size 1
    """
    reduce = -1 if dim in (-2, f.dim() - 2) else -2
    step = f.abs().amax(reduce, keepdim=True).clamp_min(1e-30) / 127.0
    levels, steps, rest = [], [], f
    for _ in range(n_levels):
        q = torch.round(rest / step)
        levels.append(q)
        steps.append(step)
        rest = rest - q * step
        step = step / _LOW
    return torch.cat(levels, dim).to(torch.int8), torch.cat(steps, dim)


def _int_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched ``a @ b`` of int8 matrices over their leading axes, as exact int32."""
    lead = a.shape[:-2]
    a2, b2 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    out = torch.empty(a2.shape[0], a2.shape[1], b2.shape[2], dtype=torch.int32)
    for i in range(a2.shape[0]):
        torch._int_mm(a2[i], b2[i], out=out[i])
    return out.reshape(*lead, a.shape[-2], b.shape[-1])


@functools.cache
def integer_products_fast() -> bool:
    """Whether int8 products beat float32 ones on this CPU, timed once per process.

    Times a (1024, 1024) bit matrix times 17 directions both ways (the int8 levels of
    :func:`bits_times`, and a cast to float32 then one matmul; the best of three runs each, at
    torch's current thread count). Both give the products to float32 precision, so the choice
    changes the speed of a fit, not its result.
    """
    gen = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2, (1024, 1024), dtype=torch.int8, generator=gen)
    e = torch.randn(17, 1024, generator=gen)

    def best(product) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            product()
            times.append(time.perf_counter() - start)
        return min(times)

    integer = best(lambda: _integer_bits_times(bits, e, 3))
    floating = best(lambda: torch.matmul(bits.float(), e.T))
    fast = integer < floating
    log.debug("Fingerprint products in %s on this CPU (test product: int8 %.2f ms, float32 %.2f ms)",
              "int8" if fast else "float32", 1e3 * integer, 1e3 * floating)
    return fast


def _integer_bits_times(bits: torch.Tensor, e: torch.Tensor, n_levels: int) -> torch.Tensor:
    levels, steps = _levels(e.float(), -2, n_levels)  # (..., n K, D), (..., n K, 1)
    k = e.shape[-2]
    out = _int_products(bits, levels.transpose(-1, -2).contiguous()).float() * steps.transpose(-1, -2)
    return sum(out[..., i * k:(i + 1) * k] for i in range(n_levels))


def bits_times(bits: torch.Tensor, e: torch.Tensor, n_levels: int = 3) -> torch.Tensor:
    """``bits @ e^T`` for 0/1 ``bits`` (..., V, D) and float ``e`` (..., K, D): Tensor (..., V, K).

    int8 ``bits`` (the CPU layout): exact integer products, three levels by default (error ~4e-7
    of ``max|e|`` per term: these products are the label evidence, multiplied by the data
    concentration kappa), float32 out; where int8 is slow (:func:`integer_products_fast`), the bits
    are cast to float32 for one matmul. Float ``bits`` (a GPU, continuous fingerprints, a
    gradient through ``e``): one float matmul in ``bits``' dtype.
    """
    if bits.dtype == torch.int8 and not integer_products_fast():
        bits = bits.to(e.dtype)
    if bits.dtype != torch.int8:
        return torch.matmul(bits, e.to(bits.dtype).transpose(-1, -2))
    return _integer_bits_times(bits, e, n_levels)


def weights_times(w: torch.Tensor, bits: torch.Tensor, n_levels: int = 2) -> torch.Tensor:
    """``w^T @ bits`` for float ``w`` (..., V, K) and 0/1 ``bits`` (..., V, D): Tensor (..., K, D).

    int8 ``bits``: two levels (error ~1.5e-5 of ``max|w|`` per term, summed over V into sums of
    V terms), float32 out, no gradient; cast to float32 where int8 is slow. Float ``bits``: one
    float matmul in ``bits``' dtype.
    """
    if bits.dtype == torch.int8 and not integer_products_fast():
        bits = bits.to(w.dtype)
    if bits.dtype != torch.int8:
        return torch.matmul(w.to(bits.dtype).transpose(-1, -2), bits)
    levels, steps = _levels(w.float(), -1, n_levels)  # (..., V, n K), (..., 1, n K)
    k = w.shape[-1]
    out = _int_products(levels.transpose(-1, -2).contiguous(), bits).float() * steps.transpose(-1, -2)
    return sum(out[..., i * k:(i + 1) * k, :] for i in range(n_levels))


__all__ = ["POPCOUNT", "bits_times", "count_ones", "integer_products_fast", "unpack_bits", "weights_times"]
