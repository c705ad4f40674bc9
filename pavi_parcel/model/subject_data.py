"""One subject's fingerprints in memory, for the closed-form baselines (k-means, VB-EM).

Binary fingerprints stay 0/1 bits with a per-row scale and offset (int8 on the CPU, whose
products run in exact integers, :mod:`.bitmatmul`); continuous ones are read as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from .bitmatmul import bits_times, count_ones, unpack_bits, weights_times
from .hierarchy import binary_fingerprint_scale


class FingerprintReader(Protocol):
    """What the baselines read from a fingerprint store (:class:`pavi_parcel.stores.FingerprintStore`)."""

    n_subjects: int
    n_sessions: int
    n_vertices: int
    n_seeds: int
    binary: bool
    session_mask: np.ndarray

    def read(self, subject: int) -> np.ndarray: ...

    def read_packed(self, subject: int, vertices: Any = None) -> np.ndarray: ...



@dataclass
class SubjectData:
    """One subject's fingerprints as ``x = bits * scale - offset`` (binary) or ``x = bits`` (continuous).

    Keeping binary fingerprints as 0/1 floats with a per-row scale and offset saves two passes
    over the largest array of a fit: ``x . e = scale (b . e) - offset sum(e)``.

    Attributes
    ----------
    bits : Tensor of shape (T, N, D)
        int8 0/1 on the CPU (exact integer products, :mod:`.bitmatmul`), float32 on a GPU or for
        continuous fingerprints.
    scale, offset : Tensor of float32, shape (T, N), or None (continuous)
        ``1 / sqrt(m - m^2 / D)`` and ``m / D * scale`` for ``m`` ones (0 for a row without data).
    valid : Tensor of bool, shape (T, N)
    """

    bits: torch.Tensor
    scale: torch.Tensor | None
    offset: torch.Tensor | None
    valid: torch.Tensor

    def weighted_sum(self, lam: torch.Tensor) -> torch.Tensor:
        """``sum_n lam[n, l] x[t, n]``: Tensor of float64, shape (T, K, D)."""
        if self.scale is None:
            return (lam.T @ self.bits).double()
        w = lam * self.scale[..., None]  # (T, N, K)
        out = weights_times(w, self.bits)
        return out.double() - (lam.double() * self.offset[..., None]).sum(1)[..., None]

    def dots(self, e: torch.Tensor) -> torch.Tensor:
        """``x[t, n] . e[t, l]`` for e of shape (T, K, D): Tensor of float32, shape (T, N, K)."""
        out = bits_times(self.bits, e)
        if self.scale is None:
            return out
        return out * self.scale[..., None] - self.offset[..., None] * e.sum(-1).to(out.dtype)[:, None, :]

    def dense(self) -> torch.Tensor:
        """The fingerprints themselves, float32 of shape (T, N, D)."""
        if self.scale is None:
            return self.bits
        return self.bits.float() * self.scale[..., None] - self.offset[..., None]


class SubjectReader:
    """Streams subjects from a store as :class:`SubjectData`, reusing one buffer.

    On a GPU, the returned data of a subject is valid until the next call (the float bits buffer is
    reused, which avoids allocating and page-faulting hundreds of MB per subject); on the CPU the
    bits stay int8, a quarter of the size, and each call returns its own.
    """

    def __init__(self, store: FingerprintReader, device: torch.device):
        self.store, self.device = store, device
        self._buffer: torch.Tensor | None = None

    def __call__(self, s: int) -> SubjectData:
        store, device = self.store, self.device
        if not store.binary:
            x = torch.from_numpy(store.read(s)).to(device)
            return SubjectData(x, None, None, torch.linalg.vector_norm(x, dim=-1) > 0.5)
        raw = store.read_packed(s, None)
        n_seeds = store.n_seeds
        ones = torch.from_numpy(count_ones(raw)).to(device)
        scale, valid = binary_fingerprint_scale(ones, n_seeds)
        if device.type == "cpu":  # int8 0/1 bits (no float copy) or float32, as is faster here
            return SubjectData(unpack_bits(raw, n_seeds), scale, ones / n_seeds * scale, valid)
        unpacked = torch.from_numpy(np.unpackbits(raw, axis=-1, count=n_seeds))
        if self._buffer is None or self._buffer.shape != unpacked.shape:
            self._buffer = torch.empty(unpacked.shape, dtype=torch.float32, device=device)
        self._buffer.copy_(unpacked)
        return SubjectData(self._buffer, scale, ones / n_seeds * scale, valid)


def read_subject(store: FingerprintReader, s: int, device: torch.device) -> SubjectData:
    """One subject's fingerprints (all sessions), in a fresh buffer."""
    return SubjectReader(store, device)(s)


__all__ = ["FingerprintReader", "SubjectData", "SubjectReader", "read_subject"]
