"""Store round trips and fingerprint kernels with planted answers."""

from __future__ import annotations

import numpy as np
import pytest

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.fingerprints.compute import binarize_top_fraction, compute_fingerprints, run_correlations
from pavi_parcel.settings.schema import FingerprintSettings
from pavi_parcel.spaces import FsaverageSpace, VolumeSpace
from pavi_parcel.stores.fingerprints import FingerprintStore, FingerprintWriter, unpack_fingerprints
from pavi_parcel.stores.posterior import Posterior, read_posterior, write_posterior
from pavi_parcel.stores.timeseries import read_run_timeseries, write_run_timeseries

SURFACE = FsaverageSpace("fsaverage5")


def test_binarize_keeps_exactly_the_top_fraction():
    rng = np.random.default_rng(0)
    corr = rng.standard_normal((50, 200)).astype(np.float32)
    bits = binarize_top_fraction(corr, 0.1)
    binary = np.unpackbits(bits, axis=1, count=200).astype(bool)
    assert bits.shape == (50, 25)
    assert (binary.sum(1) == 20).all()
    threshold = np.sort(corr, axis=1)[:, -20][:, None]
    assert (binary == (corr >= threshold)).all()


def test_unpacked_fingerprints_are_demeaned_unit_vectors():
    rng = np.random.default_rng(1)
    bits = binarize_top_fraction(rng.standard_normal((30, 117)), 0.1)
    x = unpack_fingerprints(bits, 117)
    np.testing.assert_allclose(x.sum(1), 0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    assert (unpack_fingerprints(np.zeros((2, 15), np.uint8), 117) == 0).all()


def test_run_correlations_match_numpy():
    rng = np.random.default_rng(2)
    data = rng.standard_normal((40, 12)).astype(np.float32)
    corr = run_correlations(data, np.arange(12), np.array([0, 5]))
    expected = np.corrcoef(data.T)[:, [0, 5]]
    np.testing.assert_allclose(corr, expected, atol=1e-5)


def _writer(path, n_sub=2, n_ses=2, n_vert=10, n_seeds=20, fraction=0.1, settings=None):
    return FingerprintWriter(path, [f"{i:02d}" for i in range(n_sub)], ["1", "2"][:n_ses],
                             np.ones((n_sub, n_ses), bool), np.arange(n_vert), np.arange(n_seeds),
                             SURFACE, fraction, settings or {"a": 1})


def test_fingerprint_store_round_trip_and_resume(tmp_path):
    rng = np.random.default_rng(3)
    path = tmp_path / "fp.h5"
    entries = {(s, t): binarize_top_fraction(rng.standard_normal((10, 20)), 0.2) for s in range(2) for t in range(2)}
    writer = _writer(path, fraction=0.2)
    writer.write(0, 0, entries[0, 0])
    writer.close()  # interrupted
    assert not path.exists()
    writer = _writer(path, fraction=0.2)
    assert writer.is_done(0, 0) and not writer.is_done(1, 1)
    for (s, t), bits in entries.items():
        if not writer.is_done(s, t):
            writer.write(s, t, bits)
    writer.finish()
    with FingerprintStore(path) as store:
        assert store.subjects == ["00", "01"] and store.n_seeds == 20
        np.testing.assert_allclose(store.read(1)[0], unpack_fingerprints(entries[1, 0], 20))
        picked = store.read(0, np.array([7, 2, 7]))
        np.testing.assert_allclose(picked[1], unpack_fingerprints(entries[0, 1], 20)[[7, 2, 7]])


def test_changed_settings_rebuild_the_partial_store(tmp_path):
    path = tmp_path / "fp.h5"
    writer = _writer(path, settings={"a": 1})
    writer.write(0, 0, np.zeros((10, 3), np.uint8))
    writer.close()
    writer = _writer(path, settings={"a": 2})
    assert not writer.is_done(0, 0)
    writer.close()


def test_corrupt_store_is_a_clear_error(tmp_path):
    path = tmp_path / "fp.h5"
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(BadInputError, match="delete it and rerun"):
        FingerprintStore(path)


def test_posterior_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    probs = rng.dirichlet(np.ones(3), size=(2, 8)).astype(np.float32)
    space = VolumeSpace("MNI152NLin2009cAsym", (3, 3, 3), np.diag([2.0, 2, 2, 1]))
    post = Posterior(probs, probs.mean(0), rng.standard_normal((3, 5)), ["01", "02"], ["1"],
                     np.arange(8), space, {"method": "pavi_e", "settings": {"lr": 0.01}})
    write_posterior(tmp_path / "posterior.h5", post)
    back = read_posterior(tmp_path / "posterior.h5")
    np.testing.assert_allclose(back.subject_probs, probs)
    assert back.space == space and back.attrs["settings"] == {"lr": 0.01} and back.n_networks == 3
    np.testing.assert_allclose(back.space.affine, space.affine)


def _planted_runs(tmp_path, n_frames=120):
    """Two subjects, one session each; vertices follow one of two latent signals by hemisphere."""
    rng = np.random.default_rng(5)
    valid = np.r_[np.arange(700), 10242 + np.arange(700)]
    paths = []
    for sub in ("01", "02"):
        latent = rng.standard_normal((n_frames, 2)).astype(np.float32)
        network = (valid >= 10242).astype(int)
        data = latent[:, network] + 0.8 * rng.standard_normal((n_frames, valid.size)).astype(np.float32)
        path = tmp_path / "timeseries" / f"sub-{sub}_task-rest.h5"
        write_run_timeseries(path, data, valid, {"subject": sub, "session": "", "space": "fsaverage5",
                                                 "n_total": 20484, "fingerprint": sub})
        paths.append(path)
    return paths, valid


def test_fingerprints_of_a_planted_toy(tmp_path):
    paths, valid = _planted_runs(tmp_path)
    store_path = compute_fingerprints(paths, tmp_path / "fingerprints.h5", FingerprintSettings())
    with FingerprintStore(store_path) as store:
        assert store.n_seeds == 2 * 642 and store.sessions == ["1"]
        bits = store.read(0)[0] > 0
        left_seed = store.seed_index < 10242
        left_vertex = store.vertex_index < 10242
        # every vertex's ones fall on seeds of its own network
        assert (bits[left_vertex][:, ~left_seed].sum() == 0) and (bits[~left_vertex][:, left_seed].sum() == 0)
    mtime = store_path.stat().st_mtime_ns
    compute_fingerprints(paths, store_path, FingerprintSettings())
    assert store_path.stat().st_mtime_ns == mtime  # reused, not recomputed
    assert read_run_timeseries(paths[0]).data.shape == (120, valid.size)


def test_vertices_a_run_lacks_stay_in_the_cohort_and_are_missing_only_there(tmp_path):
    paths, valid = _planted_runs(tmp_path)
    first = read_run_timeseries(paths[0])
    lacking = (valid >= 650) & (valid < 700)                       # not seeds: those are the first 642
    extra = tmp_path / "timeseries" / "sub-01_task-rest_run-2.h5"   # sub-01's second run lacks 50 vertices
    write_run_timeseries(extra, first.data[::-1, ~lacking].copy(), valid[~lacking],
                         {"subject": "01", "session": "", "space": "fsaverage5", "n_total": 20484,
                          "fingerprint": "x"})
    second = read_run_timeseries(paths[1])                          # sub-02's only run lacks 10 of them
    gone = (valid >= 690) & (valid < 700)
    write_run_timeseries(paths[1], second.data[:, ~gone].copy(), valid[~gone], second.attrs)
    store_path = compute_fingerprints([paths[0], extra, paths[1]], tmp_path / "fp.h5", FingerprintSettings())
    with FingerprintStore(store_path) as store:
        np.testing.assert_array_equal(store.vertex_index, valid)    # nothing dropped for the cohort
        sub01, sub02 = store.read(0)[0], store.read(1)[0]
        seeds = np.searchsorted(valid, store.seed_index)
        alone = binarize_top_fraction(run_correlations(first.data, np.flatnonzero(lacking), seeds), 0.1)
        np.testing.assert_allclose(sub01[lacking], unpack_fingerprints(alone, store.n_seeds))  # from the run with them
        assert (sub02[gone] == 0).all() and (np.linalg.norm(sub02[~gone], axis=1) > 0.99).all()  # missing there only
