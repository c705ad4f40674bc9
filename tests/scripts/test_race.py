"""The speed race itself: a matched start for every method, and an ELBO estimate that can be trusted."""

from __future__ import annotations

import importlib
import itertools
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

pytest.importorskip("pyro")

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def race():
    sys.path.insert(0, str(SCRIPTS))
    try:
        names = ("bench_race", "race_eval", "race_pyro")
        yield SimpleNamespace(**{name: importlib.import_module(name) for name in names})
    finally:
        sys.path.remove(str(SCRIPTS))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    from pavi_parcel.simulate import simulate_fingerprint_store

    folder = tmp_path_factory.mktemp("race")
    simulate_fingerprint_store(folder / "fp.h5", 6, 2, 17, seed=3, truth_dir=folder / "truth", n_seeds=300,
                               progress=False)
    return folder


def _setup(race, cohort, eval_subjects):
    torch.manual_seed(0)
    return race.bench_race.race_setup(cohort / "fp.h5", cohort / "truth", eval_subjects)


def test_every_gradient_method_starts_at_the_same_elbo(race, cohort):
    setup = _setup(race, cohort, 6)
    start = race.bench_race.GradientRacer("pavi_e", None, setup).score().elbo
    for method in ("pavi_f", "svi"):
        elbo = race.bench_race.GradientRacer(method, 0.05, setup).score().elbo
        assert elbo == pytest.approx(start, rel=1e-7, abs=1.0)
    # Pyro's point estimates are the shared start's mean directions, prior and group profiles
    pyro_racer = race.bench_race.PyroRacer(0.01, setup)
    points = pyro_racer.race.point_estimates()
    init = setup[4]
    shadow = pyro_racer.shadow.subject_posterior(torch.arange(6), setup[5])
    assert torch.allclose(points["psi"], shadow.m_psi, atol=1e-5)
    assert torch.allclose(points["nu"], shadow.m_nu, atol=1e-5)
    assert torch.allclose(points["mu"], torch.as_tensor(init.mu), atol=1e-5)
    labels = torch.as_tensor(init.initial_labels(17))
    assert torch.allclose(points["theta"], labels / labels.sum(-1, keepdim=True), atol=1e-6)
    assert float(points["kappa"]) == pytest.approx(init.concentrations["kappa"], rel=1e-5)


def test_subset_estimate_is_unbiased_and_its_error_is_honest(race, cohort):
    from pavi_parcel.inference.passes import full_elbo

    setup = _setup(race, cohort, 6)
    racer = race.bench_race.GradientRacer("pavi_e", None, setup)
    for _ in range(15):  # somewhere away from the start
        racer.step()
    whole = racer.score()
    exact = full_elbo(racer.guide, setup[1], setup[5])
    assert whole.elbo == pytest.approx(exact, rel=1e-9)
    assert whole.se == 0.0
    # every 3-subject subset: the estimates average to the exact ELBO (unbiased), and the stated
    # standard error matches their spread around it
    evaluator = setup[-1]
    theta = exact - sum(whole.per_subject)
    estimates, errors = [], []
    for subset in itertools.combinations(range(6), 3):
        per_subject = [whole.per_subject[i] for i in subset]
        estimates.append(evaluator.scale(per_subject) + theta)
        errors.append(evaluator.standard_error(per_subject))
    estimates = np.asarray(estimates)
    assert estimates.mean() == pytest.approx(exact, rel=1e-12)
    # without replacement, the mean stated variance equals the estimator's variance exactly
    variance = np.mean((estimates - exact) ** 2)
    assert np.mean(np.square(errors)) == pytest.approx(variance, rel=1e-6)
    assert variance > 0


def test_pyro_and_vbem_raise_the_common_elbo(race, cohort):
    setup = _setup(race, cohort, 6)
    start = race.bench_race.GradientRacer("pavi_e", None, setup).score().elbo
    racer = race.bench_race.PyroRacer(0.01, setup)
    before = racer.score().elbo
    for _ in range(20):
        racer.step()
    assert racer.score().elbo > before > start - 1e-3 * abs(start)
    elbos = [r["elbo"] for r in race.bench_race.run_vbem(setup, budget=3.0)["trace"]]
    assert len(elbos) >= 2 and elbos[-1] > elbos[0] > start


def test_vbem_pooled_concentrations_are_one_per_model(cohort):
    from pavi_parcel.model.baselines import fit_vbem
    from pavi_parcel.stores.fingerprints import FingerprintStore

    seen = []
    with FingerprintStore(cohort / "fp.h5") as store:
        res = fit_vbem(store, 17, max_iter=3, pooled_concentrations=True,
                       on_state=lambda st: seen.append(st.sigma.clone()))
    assert len(seen) == 3
    assert np.ptp(res.extra["sigma"]) == 0 and np.ptp(res.extra["eps"]) == 0
    assert all(float(s.max() - s.min()) == 0 for s in seen)


def test_convergence_rule_on_a_planted_trace(race):
    # ELBO 100 (1 - 2^-t): doubling 8 -> 16 s adds 0.4 % of the gain, 11.3 -> 22.6 s 0.04 %
    times = [0.0] + list(2.0 ** (0.5 * np.arange(12)))
    trace = [{"seconds": t, "elbo": 100 * (1 - 2.0 ** -t)} for t in times]
    hit = race.bench_race.converged_at(trace)
    assert hit is not None
    assert hit["seconds"] == pytest.approx(2 ** 4.5)
    assert race.bench_race.converged_at(trace[:6]) is None
