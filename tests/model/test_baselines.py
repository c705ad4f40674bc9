"""Group k-means and VB-EM on small planted fingerprint stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import helmert
from scipy.ndimage import gaussian_filter

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.inference.vbem import as_posterior
from pavi_parcel.metrics.scores import adjusted_rand_index, expected_calibration_error, hungarian_match
from pavi_parcel.model.baselines import ParcellationResult, fit_group_kmeans, fit_vbem, group_average_fingerprints
from pavi_parcel.model.subject_data import read_subject
from pavi_parcel.model.vmf import sample_vmf
from pavi_parcel.spaces import VolumeSpace
from pavi_parcel.stores.fingerprints import FingerprintStore, FingerprintWriter
from pavi_parcel.stores.posterior import read_posterior, write_posterior


def _fields(rng, k, shape, width=3.0):
    f = np.stack([gaussian_filter(rng.standard_normal(shape), width, mode="wrap") for _ in range(k)])
    return f / f.reshape(k, -1).std(1)[:, None, None]


def make_planted(tmp_path, n_subjects=4, n_sessions=2, shape=(20, 30), n_seeds=64, k=4, kappa=25.0,
                 eps=150.0, sigma=300.0, deviation=0.6, top_fraction=0.0, seed=0, missing=None):
    """MS-HBM sample on a grid: smooth group labels, smooth individual deviations, vMF data."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    group_fields = _fields(rng, k, shape)
    group = group_fields.reshape(k, -1).argmax(0)
    labels = np.stack([(group_fields + deviation * _fields(rng, k, shape)).reshape(k, -1).argmax(0)
                       for _ in range(n_subjects)])
    basis = torch.as_tensor(helmert(n_seeds), dtype=torch.float64)  # (D-1, D), orthonormal, _|_ ones
    mu = torch.nn.functional.normalize(torch.randn(k, n_seeds - 1, generator=gen, dtype=torch.float64), dim=-1)
    mask = np.ones((n_subjects, n_sessions), bool)
    if missing is not None:
        mask[missing] = False
    n_vert = labels.shape[1]
    writer = FingerprintWriter(tmp_path / "fp.h5", [f"{i:02d}" for i in range(n_subjects)],
                               [str(t) for t in range(n_sessions)], mask, np.arange(n_vert),
                               np.arange(n_seeds), VolumeSpace("grid", shape + (1,), np.eye(4)),
                               top_fraction, {"seed": seed})
    for s in range(n_subjects):
        psi = sample_vmf(mu, eps, 1, generator=gen)[0]
        for t in range(n_sessions):
            if not mask[s, t]:
                continue
            nu = sample_vmf(psi, sigma, 1, generator=gen)[0]
            x = (sample_vmf(nu[torch.as_tensor(labels[s])], kappa, 1, generator=gen)[0] @ basis).numpy()
            if top_fraction > 0:
                from pavi_parcel.fingerprints.compute import binarize_top_fraction

                x = binarize_top_fraction(x, top_fraction)
            writer.write(s, t, x)
    return FingerprintStore(writer.finish()), labels, group


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    store, labels, group = make_planted(tmp_path_factory.mktemp("planted"), deviation=0.25)
    yield store, labels, group
    store.close()


def test_group_kmeans_recovers_group_labels(tmp_path):
    store, labels, group = make_planted(tmp_path, n_subjects=3, deviation=0.0, kappa=15.0, seed=1)
    with store:
        res = fit_group_kmeans(store, 4, seed=0, n_init=4)
    assert isinstance(res, ParcellationResult) and res.method == "group_kmeans"
    assert res.subject_probs.shape == (3, 600, 4) and res.group_probs.shape == (600, 4)
    assert res.group_profiles.shape == (4, 64)
    np.testing.assert_allclose(res.group_probs.sum(1), 1.0, rtol=1e-5)
    assert adjusted_rand_index(res.group_labels(), group) > 0.95
    assert (res.subject_labels() == res.group_labels()).all()
    # soft probabilities are confident where the labels are right
    assert np.mean(res.group_probs.max(1)) > 0.9


def test_vbem_recovers_individual_labels_and_beats_group_clustering(planted, tmp_path):
    store, labels, group = planted
    km = fit_group_kmeans(store, 4, seed=0, n_init=4)
    res = fit_vbem(store, 4, seed=0, max_iter=30, init=km)
    assert res.subject_probs.shape == (4, 600, 4) and res.subject_probs.dtype == np.float32
    np.testing.assert_allclose(res.subject_probs.sum(-1), 1.0, rtol=1e-5)
    ari_vbem = [adjusted_rand_index(res.subject_labels()[s], labels[s]) for s in range(4)]
    ari_group = [adjusted_rand_index(km.group_labels(), labels[s]) for s in range(4)]
    assert min(ari_vbem) >= 0.9
    assert np.mean(ari_vbem) > np.mean(ari_group) + 0.05
    # data drawn from the model itself: the posterior probabilities are calibrated
    mapping = hungarian_match(res.subject_labels(), labels, 4)
    probs = res.subject_probs[..., np.argsort(mapping)]
    assert expected_calibration_error(probs.reshape(-1, 4), labels.ravel()) < 0.02
    # the objective never decreases (up to float rounding and the approximate kappa solver)
    obj = np.array([o for _, o in res.trace])
    assert np.all(np.diff(obj) >= -1e-7 * np.abs(obj[1:]))
    assert obj[-1] > obj[0]
    times = [t for t, _ in res.trace]
    assert all(b >= a for a, b in zip(times, times[1:]))
    # concentrations near the planted ones (kappa=25, eps=150, sigma=300 on the 63-sphere)
    assert 15 < res.extra["kappa"] < 40
    assert np.all(res.extra["eps"] > 50)
    theta = res.extra["theta"]
    np.testing.assert_allclose(theta.sum(1), 1.0, rtol=1e-5)
    assert theta.min() > 0
    # packaging into a posterior store
    path = tmp_path / "posterior.h5"
    write_posterior(path, as_posterior(res, store))
    back = read_posterior(path)
    np.testing.assert_allclose(back.subject_probs, res.subject_probs)
    assert back.attrs["method"] == "vbem"


def test_vbem_handles_missing_sessions_and_binary_store(tmp_path):
    store, labels, _ = make_planted(tmp_path, n_subjects=3, kappa=40.0, top_fraction=0.25, seed=3,
                                    missing=(1, 1))
    with store:
        assert store.binary
        data = read_subject(store, 1, torch.device("cpu"))  # bits + scale = the store's own reader
        x = store.read(1)
        np.testing.assert_allclose(data.dense().numpy(), x, atol=1e-6)
        assert data.valid[0].all() and not data.valid[1].any()
        lam = torch.rand(600, 4)
        e = torch.randn(2, 4, 64, dtype=torch.float64)
        np.testing.assert_allclose(data.weighted_sum(lam).numpy(), np.einsum("nk,tnd->tkd", lam.numpy(), x),
                                   rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(data.dots(e).numpy(), np.einsum("tnd,tkd->tnk", x, e.numpy()), atol=1e-4)
        total = sum(store.read(s).sum(0, dtype=np.float64) for s in range(3))
        expected = total / np.linalg.norm(total, axis=1, keepdims=True)
        np.testing.assert_allclose(group_average_fingerprints(store), expected, atol=1e-5)
        res = fit_vbem(store, 4, seed=0, max_iter=15)
        assert np.isfinite(res.subject_probs).all()
        obj = np.array([o for _, o in res.trace])
        assert np.all(np.diff(obj) >= -1e-7 * np.abs(obj[1:]))
        ari = [adjusted_rand_index(res.subject_labels()[s], labels[s]) for s in range(3)]
        assert min(ari) > 0.6


def test_bad_number_of_networks(planted):
    store, _, _ = planted
    with pytest.raises(BadInputError):
        fit_group_kmeans(store, 1)
    with pytest.raises(BadInputError):
        fit_vbem(store, 10_000)
