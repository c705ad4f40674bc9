"""Fingerprint minibatches for the fit: packed store rows, cached to a memory budget, as factored blocks.

The fit reads fingerprints as blocks of subjects x contiguous store rows (a vertex patch of a
fixed partition, :func:`make_patches`). :class:`FingerprintSource` keeps the packed rows of as
many subjects as the memory budget allows and reads the others from disk at every use;
:class:`Block` keeps a binary block as its 0/1 matrix, with the demeaning and normalisation
folded into the two products the fit needs, so the float fingerprints are never materialised.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pavi_parcel.model.bitmatmul import bits_times, count_ones, unpack_bits, weights_times
from pavi_parcel.model.hierarchy import binary_fingerprint_scale
from pavi_parcel.stores.fingerprints import FingerprintStore, normalize_continuous, unpack_fingerprints


class FingerprintSource:
    """Fingerprint blocks as float32 tensors; packed store rows cached up to a memory budget.

    Parameters
    ----------
    store : FingerprintStore
    budget_gb : float
        Memory for the cache of packed rows (bits or float16); subjects beyond it are read from
        disk at every use.
    device : torch.device
    """

    def __init__(self, store: FingerprintStore, budget_gb: float, device: torch.device):
        self.store, self.device = store, device
        width = (store.n_seeds + 7) // 8 if store.binary else 2 * store.n_seeds
        self.bytes_per_subject = store.n_sessions * store.n_vertices * width
        self.max_cached = int(max(0.0, budget_gb) * 2**30 // max(1, self.bytes_per_subject))
        self._cache: dict[int, np.ndarray] = {}

    def _decode(self, raw: np.ndarray) -> np.ndarray:
        if self.store.binary:
            return unpack_fingerprints(raw, self.store.n_seeds)
        return normalize_continuous(raw)

    def raw_rows(self, subject: int, a: int, b: int) -> np.ndarray:
        """Packed store rows [a, b) of one subject: bits (T, V, ceil(D/8)) or float16 (T, V, D)."""
        raw = self._cache.get(subject)
        if raw is None and len(self._cache) < self.max_cached:
            raw = self._cache[subject] = self.store.read_packed(subject, None)
        return raw[:, a:b] if raw is not None else self.store.read_packed(subject, slice(a, b))

    def rows(self, subject: int, a: int, b: int) -> np.ndarray:
        """Fingerprints of one subject, store rows [a, b): float32 (T, b - a, D)."""
        return self._decode(self.raw_rows(subject, a, b))

    def get(self, subjects: np.ndarray, a: int, b: int) -> Block:
        """Fingerprints of several subjects on rows [a, b), as a :class:`Block` on the device."""
        store, n_ses, n_v = self.store, self.store.n_sessions, b - a
        raws = np.stack([self.raw_rows(int(s), a, b) for s in subjects])
        if store.binary:
            ones = torch.from_numpy(count_ones(raws)).to(self.device)
            if self.device.type == "cpu":  # int8 0/1 (exact integer products) or float32, as is faster here
                bits = unpack_bits(raws)
            else:  # move the packed bytes, unpack on the device
                bits = _bit_table(self.device)[torch.from_numpy(raws).to(self.device).long()]
            bits = bits.reshape(len(subjects), n_ses, n_v, -1)  # 0/1, zero-padded to 8 * bytes
            scale, valid = binary_fingerprint_scale(ones, store.n_seeds)
            return Block(bits, scale, ones / store.n_seeds, valid, store.n_seeds)
        raw = torch.from_numpy(raws).to(self.device)
        x = torch.from_numpy(self._decode(raws)).to(self.device)
        valid = raw.ne(0).any(-1)
        return Block(x, valid.to(x.dtype), torch.zeros_like(valid, dtype=x.dtype), valid, store.n_seeds)


_BIT_TABLES: dict = {}


def _bit_table(device: torch.device) -> torch.Tensor:
    """(256, 8) float32 table: the bits of every byte, most significant first (np.packbits order)."""
    if device not in _BIT_TABLES:
        table = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)
        _BIT_TABLES[device] = torch.from_numpy(table).to(device)
    return _BIT_TABLES[device]


class Block:
    """A minibatch of fingerprints kept in factored form: ``x = scale * (raw - offset)``.

    Binary stores are used as 0/1 matrices (``raw``, zero-padded to a multiple of 8 columns),
    with the demeaning (``offset = m / D``) and normalisation (``scale``) applied inside the
    products, so the demeaned float fingerprints are never materialised.

    Attributes
    ----------
    raw : Tensor of shape (B, T, V, D') with D' >= D
        0/1 bits as int8 on a CPU with fast integer products (exact, :mod:`pavi_parcel.model.bitmatmul`),
        as float32 on other CPUs and on a GPU; continuous fingerprints as float32.
    scale, offset : Tensor of shape (B, T, V)
    valid : Tensor of bool, shape (B, T, V)
    n_seeds : int
    """

    def __init__(self, raw: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, valid: torch.Tensor,
                 n_seeds: int):
        self.raw, self.scale, self.offset, self.valid, self.n_seeds = raw, scale, offset, valid, n_seeds

    def _pad(self, v: torch.Tensor) -> torch.Tensor:
        extra = self.raw.shape[-1] - v.shape[-1]
        return torch.nn.functional.pad(v, (0, extra)) if extra else v

    def dot(self, e: torch.Tensor) -> torch.Tensor:
        """``x . e`` for directions e of shape (B, T, K, D): Tensor (B, T, V, K).

        Differentiable in ``e`` only through the float path (int8 bits are then cast once).
        """
        grad = e.requires_grad and torch.is_grad_enabled()  # int8 levels carry no gradient: cast (no-op if float)
        raw_dot = bits_times(self.raw.to(e.dtype) if grad else self.raw, self._pad(e))
        return self.scale[..., None] * (raw_dot - self.offset[..., None] * e.sum(-1)[:, :, None, :])

    def weighted_sums(self, lam: torch.Tensor) -> torch.Tensor:
        """``sum_v lam_{b,v,k} x_{b,t,v}`` for lam of shape (B, V, K): Tensor (B, T, K, D) (no gradient)."""
        w = lam[:, None] * self.scale[..., None]  # (B, T, V, K)
        out = weights_times(w, self.raw)[..., :self.n_seeds]
        return out - (w * self.offset[..., None]).sum(2)[..., None]

    def dense(self) -> torch.Tensor:
        """The demeaned unit fingerprints, Tensor (B, T, V, D) (for tests and small blocks)."""
        return self.scale[..., None] * (self.raw[..., :self.n_seeds].to(self.scale.dtype) - self.offset[..., None])


def make_patches(n_vertices: int, batch_vertices: int) -> list[tuple[int, int]]:
    """Fixed partition of the store rows into equal contiguous patches of about ``batch_vertices``."""
    n_patches = max(1, math.ceil(n_vertices / max(1, int(batch_vertices))))
    edges = np.linspace(0, n_vertices, n_patches + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


__all__ = ["FingerprintSource", "Block", "make_patches"]
