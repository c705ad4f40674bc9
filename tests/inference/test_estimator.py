"""The Python API of the model: PaviParcellation on planted stores (fit, transform, save, load, parameters)."""

from __future__ import annotations

import numpy as np
import pytest

from pavi_parcel import PaviParcellation
from pavi_parcel.exceptions import BadInputErrors
from pavi_parcel.metrics.scores import adjusted_rand_index
from pavi_parcel.simulate.planted import write_planted_store
from tests.builders import SMALL_FIT

N_TRAIN = 6


@pytest.fixture(scope="module")
def fitted(planted_store, tmp_path_factory):
    path, data = planted_store(N_TRAIN + 1, seed=11, keep=N_TRAIN)
    est = PaviParcellation(n_networks=4, random_state=0, device="cpu", **SMALL_FIT)
    est.fit(path, checkpoint_dir=tmp_path_factory.mktemp("est"))
    return est, path, data


def test_fit_recovers_planted_networks_with_documented_attributes(fitted):
    est, _, data = fitted
    assert est.subjects_ == [f"{i + 1:02d}" for i in range(N_TRAIN)]
    assert est.subject_probs_.shape == (N_TRAIN, 144, 4) and est.group_probs_.shape == (144, 4)
    assert np.array_equal(est.vertex_index_, np.arange(144)) and est.group_profiles_.shape == (4, 24)
    np.testing.assert_allclose(est.subject_probs_.sum(-1), 1.0, atol=1e-4)
    aris = [adjusted_rand_index(data.labels[s], est.subject_probs_[s].argmax(-1)) for s in range(N_TRAIN)]
    assert min(aris) >= 0.9
    assert est.elbo_ and est.elbo_[-1]["step"] == len(est.elbo_)


def test_transform_maps_a_new_subject_without_refit(fitted, tmp_path):
    est, _, data = fitted
    new = type(data)(data.x[N_TRAIN:], data.labels[N_TRAIN:], data.group_labels, data.mu, data.grid_shape)
    before = est.subject_probs_.copy()
    probs = est.transform(write_planted_store(tmp_path / "new.h5", new))
    assert probs.shape == (1, 144, 4)
    # the new subject's networks are the training networks, in the same order
    mapping = np.array([np.bincount(data.labels[:N_TRAIN][est.subject_probs_.argmax(-1) == k],
                                    minlength=4).argmax() for k in range(4)])
    assert (mapping[probs[0].argmax(-1)] == data.labels[N_TRAIN]).mean() >= 0.9
    np.testing.assert_array_equal(est.subject_probs_, before)  # the fit is untouched


def test_save_and_load_give_the_same_maps(fitted, tmp_path):
    est, path, _ = fitted
    est.save(tmp_path / "model")
    again = PaviParcellation.load(tmp_path / "model")
    assert again.get_params() == est.get_params() and again.subjects_ == est.subjects_
    np.testing.assert_array_equal(again.subject_probs_, est.subject_probs_)
    np.testing.assert_allclose(again.transform(path), est.transform(path), atol=1e-6)


def test_parameters_follow_scikit_learn_conventions():
    est = PaviParcellation(n_networks=7, method="vbem", potts_beta=0.5)
    params = est.get_params()
    assert params["n_networks"] == 7 and params["potts_beta"] == 0.5 and params["tol"] == 1e-6  # vbem's preset
    assert params["random_state"] == 0 and "batch_subjects" in params and "theta_prior" in params
    assert est.set_params(max_minutes=3.0) is est and est.max_minutes == 3.0
    clone = PaviParcellation(**est.get_params())
    assert clone.get_params() == est.get_params()
    assert "n_networks=7" in repr(est) and "potts_beta=0.5" in repr(est)
    with pytest.raises(ValueError, match="Unknown setting potts"):
        PaviParcellation(potts=1)


def test_invalid_parameters_are_named_at_fit(tmp_path):
    est = PaviParcellation(n_networks=1, lr=-0.1)
    with pytest.raises(BadInputErrors) as err:
        est.fit(tmp_path / "missing.h5")
    assert {e.what for e in err.value.errors} == {"Invalid model.n_networks", "Invalid fit.lr"}
    with pytest.raises(ValueError, match="not fitted"):
        est.transform(tmp_path / "missing.h5")
