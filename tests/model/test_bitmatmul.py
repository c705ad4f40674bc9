"""Integer products of 0/1 fingerprints against float64 references."""

import numpy as np
import pytest
import torch

from pavi_parcel.model import bitmatmul
from pavi_parcel.model.bitmatmul import bits_times, count_ones, integer_products_fast, unpack_bits, weights_times


@pytest.fixture(params=["int8", "float32"])
def product_path(request, monkeypatch):
    """Both ways of multiplying int8 bits, whichever this CPU would choose."""
    monkeypatch.setattr(bitmatmul, "integer_products_fast", lambda: request.param == "int8")
    return request.param


@pytest.fixture
def packed_bits():
    """Packed 0/1 rows of 2 sessions x 300 vertices x 1175 seeds (not a multiple of 8), ~10 % ones."""
    rng = np.random.default_rng(4)
    bits = rng.random((2, 300, 1175)) < 0.1
    return bits, np.packbits(bits, axis=-1)


def test_unpack_and_count_ones_match_the_bits(packed_bits, product_path):
    bits, packed = packed_bits
    unpacked = unpack_bits(packed, bits.shape[-1])
    assert unpacked.dtype == {"int8": torch.int8, "float32": torch.float32}[product_path]
    np.testing.assert_array_equal(unpacked.numpy(), bits)
    assert unpack_bits(packed).shape[-1] == 1176  # zero padding kept without a count
    np.testing.assert_array_equal(count_ones(packed), bits.sum(-1))


def test_bits_times_directions_beats_float32(packed_bits, product_path):
    bits, packed = packed_bits
    rng = np.random.default_rng(5)
    e = rng.standard_normal((2, 17, 1175)) / np.sqrt(1175)  # unit-scale directions
    exact = bits.astype(np.float64) @ e.transpose(0, 2, 1)
    got = bits_times(unpack_bits(packed, 1175), torch.from_numpy(e)).numpy()
    f32 = (torch.from_numpy(bits.astype(np.float32)) @ torch.from_numpy(e).float().transpose(1, 2)).numpy()
    assert got.shape == (2, 300, 17)
    assert np.abs(got - exact).max() <= np.abs(f32 - exact).max() + 1e-7
    assert np.abs(got - exact).max() < 2e-6


def test_weights_times_bits_within_its_stated_error(packed_bits, product_path):
    bits, packed = packed_bits
    rng = np.random.default_rng(6)
    w = rng.random((2, 300, 17)) * 3.0  # e.g. responsibilities times row scales
    exact = w.transpose(0, 2, 1) @ bits.astype(np.float64)
    got = weights_times(torch.from_numpy(w), unpack_bits(packed, 1175)).numpy()
    assert got.shape == (2, 17, 1175)
    # two levels: each term within max|w| / (127 * 254 * 2), summed over the 300 vertices at worst
    bound = w.max() / (127 * 254 * 2) * 300
    assert np.abs(got - exact).max() < bound
    assert np.abs(got - exact).max() / np.abs(exact).max() < 1e-5


def test_zero_directions_give_zero_and_signs_hold(product_path):
    bits = torch.tensor([[1, 0, 1], [0, 0, 0]], dtype=torch.int8)
    e = torch.tensor([[0.5, -2.0, -0.25], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(bits_times(bits, e).numpy(), [[0.25, 0.0], [0.0, 0.0]], atol=1e-6)


def test_the_timed_choice_is_made_once_and_both_paths_agree(packed_bits, monkeypatch):
    fast = integer_products_fast()
    assert isinstance(fast, bool) and integer_products_fast() is fast  # cached: one choice per process
    bits, packed = packed_bits
    e = torch.from_numpy(np.random.default_rng(7).standard_normal((2, 17, 1175)).astype(np.float32))
    unpacked = unpack_bits(packed, 1175)
    results = []
    for path in (True, False):
        monkeypatch.setattr(bitmatmul, "integer_products_fast", lambda path=path: path)
        results.append(bits_times(unpacked, e).numpy())
    np.testing.assert_allclose(results[0], results[1], atol=1e-5)
