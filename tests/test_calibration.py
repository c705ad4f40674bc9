"""Label calibration from two sessions (consistency_temperature) on planted posteriors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pavi_parcel.model.labels import LabelEncoder, consistency_temperature

K, S, N = 5, 20, 2000
SIGNAL, NOISE, INFLATION = 1.0, 1.0, 8.0


def _planted(flat_prior: bool, seed: int = 0):
    """Two independent sessions whose exact posterior is softmax(SIGNAL / NOISE**2 * l + log pi).

    The evidence handed over is that log-likelihood inflated INFLATION times, so the temperature
    that calibrates it is 1 / INFLATION.
    """
    rng = np.random.default_rng(seed)
    pi = np.full((N, K), 1.0 / K) if flat_prior else rng.dirichlet(np.full(K, 0.7), size=N)
    y = np.array([[rng.choice(K, p=pi[n]) for n in range(N)] for _ in range(S)])  # (S, N)
    signal = SIGNAL * np.eye(K)[y]  # (S, N, K)
    obs = signal[:, None] + NOISE * rng.standard_normal((S, 2, N, K))
    evidence = torch.as_tensor(INFLATION * SIGNAL / NOISE**2 * obs)
    log_prior = torch.as_tensor(np.log(pi)).expand(S, N, K)
    return evidence, log_prior, torch.as_tensor(y)


@pytest.mark.parametrize("tempers_prior", [False, True])
def test_temperature_undoes_a_planted_inflation_with_a_flat_prior(tempers_prior):
    evidence, log_prior, labels = _planted(flat_prior=True)
    tau, rho = consistency_temperature(evidence, log_prior, labels, tempers_prior=tempers_prior)
    assert tau == pytest.approx(1.0 / INFLATION, rel=0.1)
    assert rho < 0.05  # independent sessions


def test_evidence_temperature_undoes_a_planted_inflation_under_a_spatial_prior():
    evidence, log_prior, labels = _planted(flat_prior=False)
    tau, _ = consistency_temperature(evidence, log_prior, labels, tempers_prior=False)
    assert tau == pytest.approx(1.0 / INFLATION, rel=0.1)


def test_correlated_sessions_are_discounted():
    evidence, log_prior, labels = _planted(flat_prior=True)
    shared = evidence[:, :1] - INFLATION * SIGNAL * torch.nn.functional.one_hot(labels, K)[:, None]
    correlated = evidence.clone()
    correlated[:, 1] = 0.7 * correlated[:, 1] + 0.3 * (shared[:, 0] + INFLATION * SIGNAL
                                                        * torch.nn.functional.one_hot(labels, K))
    _, rho = consistency_temperature(correlated, log_prior, labels)
    assert rho > 0.2


def test_logit_temperature_keeps_the_trained_encoders_choice():
    enc = LabelEncoder(K)
    with torch.no_grad():
        enc.a_raw.fill_(0.3)
        enc.c.copy_(torch.linspace(-1, 1, K))
    evidence = 5 * torch.randn(2, 300, K)
    log_prior = torch.log_softmax(torch.randn(300, K), -1)
    trained = enc(evidence, log_prior, calibrated=False)
    enc.calibrate(0.05, 0.0, tempers_prior=True)
    calibrated = enc(evidence, log_prior)
    assert torch.equal(calibrated.argmax(-1), trained.argmax(-1))
    assert (calibrated.exp().amax(-1) < trained.exp().amax(-1) + 1e-6).all()  # only less confident
    enc_evidence = LabelEncoder(K)
    enc_evidence.calibrate(0.05, 0.0, tempers_prior=False)  # tempered likelihood: the prior can win
    assert not torch.equal(enc_evidence(evidence, log_prior).argmax(-1), trained.argmax(-1))


def test_states_saved_before_the_logit_form_load_as_the_evidence_form():
    old = {k: v for k, v in LabelEncoder(K).state_dict().items() if k != "tempers_prior"}
    enc = LabelEncoder(K)
    enc.load_state_dict(old)
    assert float(enc.tempers_prior) == 0.0


def test_an_unknown_calibration_is_bad_input(tmp_path):
    from pavi_parcel.exceptions import BadInputError
    from pavi_parcel.fit import fit_model

    with pytest.raises(BadInputError, match="model.calibration"):
        fit_model(tmp_path / "fingerprints.h5", tmp_path / "model", {"calibration": "consistensy"}, None, seed=0)
    assert not (tmp_path / "model").exists()  # nothing half-written
