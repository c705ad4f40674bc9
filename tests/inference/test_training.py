"""Training loop: recovery of planted networks, resume determinism, SIGTERM, devices, new subjects."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import torch

from pavi_parcel.exceptions import InterruptedFit
from pavi_parcel.inference.device import resolve_device
from pavi_parcel.inference.epochs import epoch_batch, epoch_plan
from pavi_parcel.inference.fitted_run import load_model_state
from pavi_parcel.inference.training import fit_model
from pavi_parcel.metrics.scores import adjusted_rand_index, hungarian_match
from pavi_parcel.model.new_subjects import infer_subjects
from pavi_parcel.settings.schema import FitSettings, ModelSettings, fit_preset
from pavi_parcel.stores.posterior import read_posterior
from tests.builders import SMALL_FIT

N_TRAIN = 6
MODEL = ModelSettings(n_networks=4)
FIT = SMALL_FIT


@pytest.fixture(scope="module")
def planted(planted_store):
    """Six training subjects and one held-out subject, high signal, 144 vertices, D = 24."""
    return planted_store(N_TRAIN + 1, seed=11, keep=N_TRAIN)


@pytest.fixture(scope="module")
def pavi_fit(planted, tmp_path_factory):
    path, _ = planted
    model_dir = tmp_path_factory.mktemp("pavi") / "model"
    return model_dir, fit_model(path, model_dir, MODEL, FitSettings(**FIT, method="pavi_e"), seed=0, device="cpu")


def test_recovers_planted_networks_without_label_switching(planted, pavi_fit):
    _, data = planted
    model_dir, out = pavi_fit
    post = read_posterior(out)
    probs = post.subject_probs
    assert probs.shape == (N_TRAIN, 144, 4)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-4)
    aris = [adjusted_rand_index(data.labels[s], probs[s].argmax(-1)) for s in range(N_TRAIN)]
    assert min(aris) >= 0.9
    # ONE network mapping serves every subject: subjects' networks are tied to the group's
    mapping = hungarian_match(probs.argmax(-1), data.labels[:N_TRAIN], 4)
    assert (mapping[probs.argmax(-1)] == data.labels[:N_TRAIN]).mean(-1).min() >= 0.95
    rows = (model_dir / "elbo.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:3] == ["step", "seconds", "elbo"] and len(rows) > 10
    assert post.attrs["n_variational_parameters"]["learned"] < 100  # amortized: no per-(s, n) parameter


def test_new_subject_is_inferred_by_the_encoders(planted, pavi_fit):
    _, data = planted
    model_dir, _ = pavi_fit
    state = load_model_state(model_dir / "model_state.pt")
    probs = infer_subjects(state, data.x[N_TRAIN:])
    assert probs.shape == (1, 144, 4)
    assert adjusted_rand_index(data.labels[N_TRAIN], probs[0].argmax(-1)) >= 0.9


def _signal_after_first_checkpoint(folder, sig):
    deadline = time.time() + 60
    while not (folder / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.005)
    os.kill(os.getpid(), sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGUSR1, marks=pytest.mark.slow)])
def test_signal_checkpoints_and_resume_matches_uninterrupted(planted, tmp_path, sig):
    path, _ = planted
    fit = FitSettings(**{**FIT, "tol": 0.0})
    reference = read_posterior(fit_model(path, tmp_path / "ref", MODEL, fit, seed=0, device="cpu"))

    previous = signal.getsignal(sig)
    watcher = threading.Thread(target=_signal_after_first_checkpoint, args=(tmp_path / "run", sig))
    watcher.start()
    with pytest.raises(InterruptedFit):
        fit_model(path, tmp_path / "run", MODEL, fit, seed=0, device="cpu")
    watcher.join()
    assert signal.getsignal(sig) is previous  # handlers restored after the fit
    stopped = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["monitor"]["step"]
    assert 5 <= stopped < 40
    assert not (tmp_path / "run" / "posterior.h5").exists()

    resumed = read_posterior(fit_model(path, tmp_path / "run", MODEL, fit, seed=0, device="cpu"))
    np.testing.assert_allclose(resumed.subject_probs, reference.subject_probs, atol=1e-5)
    np.testing.assert_allclose(resumed.group_profiles, reference.group_profiles, atol=1e-5)
    steps = [int(r.split("\t")[0]) for r in (tmp_path / "run" / "elbo.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 41))


@pytest.mark.parametrize("method", ["svi", pytest.param("pavi_f", marks=pytest.mark.slow)])
def test_other_gradient_methods_learn(planted, tmp_path, method):
    """Mean-field SVI and PAVI-F: same loop, the ELBO rises and the planted networks emerge."""
    path, data = planted
    out = fit_model(path, tmp_path / "model", MODEL, FitSettings(**{**FIT, "lr": 0.2, "max_steps": 100}, method=method),
                    seed=0, device="cpu")
    post = read_posterior(out)
    elbo = np.loadtxt(tmp_path / "model" / "elbo.tsv", skiprows=1, usecols=2)
    assert elbo[-20:].mean() > elbo[:20].mean()
    aris = [adjusted_rand_index(data.labels[s], post.subject_probs[s].argmax(-1)) for s in range(N_TRAIN)]
    assert np.mean(aris) >= 0.7
    # potts_beta=auto chooses the Potts strength for these methods too, as for PAVI-E and VB-EM
    assert post.attrs["potts"]["method"] == "sessions" and post.attrs["potts"]["n"] > 0
    # SVI's maps have no per-session form to temper on: they keep their own confidence
    assert post.attrs["potts"].get("keep_confidence", False) == (method == "svi")


def test_potts_prior_runs_on_grid_neighbours(planted, tmp_path):
    path, data = planted
    out = fit_model(path, tmp_path / "model", MODEL.replace(potts_beta=0.3), FitSettings(**{**FIT, "max_steps": 20}),
                    seed=0, device="cpu")
    post = read_posterior(out)
    assert min(adjusted_rand_index(data.labels[s], post.subject_probs[s].argmax(-1)) for s in range(N_TRAIN)) >= 0.9
    potts = np.loadtxt(tmp_path / "model" / "elbo.tsv", skiprows=1, usecols=9)
    assert (potts > 0).all()


def test_device_auto_resolves_to_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(Exception, match="CUDA"):
        resolve_device("cuda")


def test_vbem_method_delegates_and_supports_new_subjects(planted, tmp_path):
    path, data = planted
    out = fit_model(path, tmp_path / "model", MODEL, fit_preset("vbem", max_iter=20), seed=0, device="cpu")
    post = read_posterior(out)
    assert post.attrs["method"] == "vbem" and post.subject_probs.shape == (N_TRAIN, 144, 4)
    np.testing.assert_allclose(post.subject_probs.sum(-1), 1.0, atol=1e-4)
    probs = infer_subjects(load_model_state(tmp_path / "model" / "model_state.pt"), data.x[N_TRAIN:])
    assert probs.shape == (1, 144, 4)
    assert adjusted_rand_index(data.labels[N_TRAIN], probs[0].argmax(-1)) >= 0.5


@pytest.mark.parametrize("n_subjects, n_batch", [(10, 4), (12, 4), (5, 5)])
def test_an_epoch_visits_every_subject_patch_pair(n_subjects, n_batch):
    n_patches = 3
    steps = -(-n_subjects // n_batch) * n_patches
    seen = np.zeros((n_subjects, n_patches), dtype=int)
    for i in range(steps):
        subj, patch = epoch_batch(7, 2, i, n_subjects, n_batch, n_patches)
        assert len(subj) == n_batch and len(set(subj.tolist())) == n_batch and np.all(np.diff(subj) > 0)
        seen[subj, patch] += 1
    assert seen.min() == 1  # every pair at least once; only the padding of a short last batch repeats
    assert seen.sum() - seen.size == steps * n_batch - n_subjects * n_patches
    first = epoch_plan(7, 2, n_subjects, n_batch, n_patches)
    epoch_plan.cache_clear()  # a resumed process rebuilds the same plan from (seed, epoch)
    again = epoch_plan(7, 2, n_subjects, n_batch, n_patches)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = epoch_plan(7, 3, n_subjects, n_batch, n_patches)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
