"""One session per subject: pseudo-sessions calibrate the maps as well as a second session does.

One planted cohort with two sessions is fitted three ways: on both sessions; on session 01
alone (``fingerprints.split=auto`` halves each run in time); on session 01 alone, unsplit
(no calibration, the overconfident maps the split corrects). A held-back subject is then
applied to the single-session fit and gets pseudo-sessions too.
"""

from __future__ import annotations

import logging

import h5py
import pytest

from pavi_parcel.cli import main
from pavi_parcel.io.layout import applied_posterior_path
from pavi_parcel.simulate import simulate_dataset
from pavi_parcel.simulate.truth import load_truth
from pavi_parcel.stores.posterior import read_posterior
from pavi_parcel.validation.scoring import truth_metrics

pytestmark = pytest.mark.slow
K = 7
FIT = ["--n-networks", str(K), "--device", "cpu", "seed=1", "fit.max_minutes=1", "n_jobs=1", "fit.num_threads=2"]
TRAIN = ["--participant-label", "01", "02", "03", "04", "05"]


def _fit(sim, out, *extra):
    assert main(["fit", str(sim.bids_dir), str(out), *TRAIN, *FIT, *extra]) == 0
    post = read_posterior(out / "model" / "posterior.h5")
    return post, truth_metrics(post, load_truth(sim.truth_dir))


def test_single_session_maps_are_calibrated_like_two_session_maps(tmp_path, caplog):
    sim = simulate_dataset(tmp_path / "sim", n_subjects=6, n_sessions=2, n_frames=240, n_networks=K, seed=4,
                           progress=False)
    _, two = _fit(sim, tmp_path / "two")
    with caplog.at_level(logging.INFO):
        post, one = _fit(sim, tmp_path / "one", "data.sessions=['01']")
    assert "each run split into two halves in time (gap 5 frames each side of the cut)" in caplog.text
    assert post.sessions == ["01.a", "01.b"]
    _, unsplit = _fit(sim, tmp_path / "unsplit", "data.sessions=['01']", "fingerprints.split=none")

    assert one.ece.mean() < 0.05
    assert abs(one.ece.mean() - two.ece.mean()) < 0.03
    assert unsplit.ece.mean() > one.ece.mean() + 0.02            # uncalibrated: the split is what calibrates
    assert one.ari.mean() > 0.6

    assert main(["apply", str(tmp_path / "one"), str(sim.bids_dir), "--participant-label", "06"]) == 0
    with h5py.File(applied_posterior_path(tmp_path / "one", "06"), "r") as h5:
        assert [s.decode() if isinstance(s, bytes) else str(s) for s in h5["sessions"][()]] == ["01.a", "01.b"]
