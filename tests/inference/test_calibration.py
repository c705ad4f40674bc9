"""Label calibration from two sessions (consistency_temperature) on planted posteriors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pavi_parcel.model.labels import LabelEncoder, cavity_evidence, consistency_temperature
from pavi_parcel.model.vmf import mean_resultant_length

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
    old = {k: v for k, v in LabelEncoder(K).state_dict().items() if k not in ("tempers_prior", "cavity")}
    old["tau"] = torch.tensor(0.3)
    enc = LabelEncoder(K)
    enc.load_state_dict(old)
    assert float(enc.tempers_prior) == 0.0
    assert enc.calibrated and not enc.uses_cavity  # old maps were calibrated on the plain evidence


def test_an_unknown_calibration_is_bad_input(tmp_path):
    from pavi_parcel.exceptions import BadInputError
    from pavi_parcel.settings.schema import ModelSettings

    with pytest.raises(BadInputError, match="model.calibration"):
        ModelSettings(calibration="consistensy")
    assert not (tmp_path / "model").exists()  # nothing half-written


def _session(n: int, d: int, k: int, seed: int):
    """Pure-noise unit fingerprints (n, d), random hard labels (n, k) and profile natural parameters (k, d)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    x -= x.mean(1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.eye(k)[rng.integers(k, size=n)]
    subject_term = 0.3 * rng.standard_normal((k, d))
    return torch.as_tensor(x), torch.as_tensor(lam), torch.as_tensor(subject_term)


def test_cavity_evidence_equals_profiles_refitted_without_the_vertex():
    n, d, k, gain, kappa, dim = 60, 40, 4, 0.7, 5.0, 39.0
    x, lam, subject_term = _session(n, d, k, seed=1)
    eta = gain * kappa * lam.T @ x + subject_term  # (K, D), as the subject encoder's nu
    k_nu = eta.norm(dim=-1)
    a_nu = mean_resultant_length(k_nu, dim)
    xe = x @ (a_nu[:, None] * eta / k_nu[:, None]).T  # (N, K) = x . E[nu]
    got = cavity_evidence(xe[None, None], lam[None], k_nu[None, None], a_nu[None, None],
                          torch.tensor(kappa), torch.tensor(gain), dim)[0, 0]
    for i in range(n):  # brute force: remove vertex i from the sums, recompute E[nu], score it
        eta_i = eta - gain * kappa * lam[i][:, None] * x[i][None]
        k_i = eta_i.norm(dim=-1)
        e_nu_i = mean_resultant_length(k_i, dim)[:, None] * eta_i / k_i[:, None]
        assert torch.allclose(got[i], kappa * e_nu_i @ x[i], rtol=1e-6, atol=1e-8)


def test_cavity_evidence_removes_the_vote_of_a_vertex_for_its_own_label():
    n, d, k, gain, kappa, dim = 400, 30, 3, 1.0, 20.0, 29.0
    x, lam, subject_term = _session(n, d, k, seed=2)  # labels carry no signal
    eta = gain * kappa * lam.T @ x + 0.0 * subject_term
    k_nu = eta.norm(dim=-1)
    a_nu = mean_resultant_length(k_nu, dim)
    full = kappa * x @ (a_nu[:, None] * eta / k_nu[:, None]).T
    cavity = cavity_evidence(full[None, None] / kappa, lam[None], k_nu[None, None], a_nu[None, None],
                             torch.tensor(kappa), torch.tensor(gain), dim)[0, 0]

    def own_minus_other(e):
        """Mean advantage of a vertex's own label, in standard errors of the mean."""
        gap = (e * lam).sum(1) - (e * (1 - lam)).sum(1) / (k - 1)
        return float(gap.mean() / (gap.std() / n ** 0.5))

    assert own_minus_other(full) > 5  # each vertex agrees with the profile it was averaged into
    assert abs(own_minus_other(cavity)) < 3  # no label is favoured beyond sampling noise
