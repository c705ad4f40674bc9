"""Per-run quality gates on a simulated fMRIPrep cohort: bad runs are excluded and listed, the others keep every vertex.

The cohort (5 subjects x 2 sessions, fsaverage5) gets four bad runs, the kinds a large cohort
holds: a left hemisphere of zeros (a failed surface sampling), a run scrubbed below
``ingest.min_frames``, and a subject whose runs are both unusable (constant signal; too much
motion). The fit must exclude exactly those, keep the cortex of everybody else whole, say why
in the log, the QC table and the report, and pass the BIDS validator; with
``qc.on_exclusion=error`` it must stop with one line instead.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pavi_parcel.cli import main
from pavi_parcel.simulate import simulate_dataset
from pavi_parcel.stores.fingerprints import FingerprintStore
from pavi_parcel.stores.timeseries import read_run_timeseries
from tests.bids_validator import EXPECTED_WARNINGS, assert_bids_valid

pytestmark = pytest.mark.slow
K = 7
FIT = ["--n-networks", str(K), "--device", "cpu", "seed=1", "fit.max_steps=40", "n_jobs=1", "fit.num_threads=2"]
BAD = {
    "sub-02_ses-01_task-rest_run-1": "no valid vertex in the left hemisphere",
    "sub-03_ses-02_task-rest_run-1": "frames kept after scrubbing, below ingest.min_frames=50",
    "sub-04_ses-01_task-rest_run-1": "no valid vertex in the left hemisphere; no valid vertex in the right hemisphere",
    "sub-04_ses-02_task-rest_run-1": "above qc.max_mean_fd=0.5",
}


def _zero(path):
    img = nib.load(str(path))
    for array in img.darrays:
        array.data = np.zeros_like(array.data)
    nib.save(img, str(path))


def _set_fd(path, fd):
    table = pd.read_csv(path, sep="\t", na_values="n/a")
    table["framewise_displacement"] = np.r_[np.nan, fd[1:]]
    table.to_csv(path, sep="\t", index=False, na_rep="n/a")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("qc")
    sim = simulate_dataset(root / "sim", n_subjects=5, n_sessions=2, n_frames=120, n_networks=K, seed=3,
                           progress=False)
    func = {(s, t): sim.bids_dir / f"sub-{s}" / f"ses-{t}" / "func" for s in ("02", "03", "04") for t in ("01", "02")}

    def files(sub, ses, pattern):
        return sorted(func[sub, ses].glob(f"sub-{sub}_ses-{ses}_task-rest_run-1_{pattern}"))

    _zero(files("02", "01", "hemi-L_*bold.func.gii")[0])
    fd = np.full(120, 0.05)
    fd[1::3] = 0.9                      # every third frame jerks: scrubbing leaves too few frames
    _set_fd(files("03", "02", "desc-confounds_timeseries.tsv")[0], fd)
    for path in files("04", "01", "hemi-*bold.func.gii"):
        _zero(path)
    _set_fd(files("04", "02", "desc-confounds_timeseries.tsv")[0], np.full(120, 0.8))
    return sim, root


def test_bad_runs_are_excluded_listed_and_do_not_shrink_the_cortex(cohort, caplog):
    sim, root = cohort
    out = root / "out"
    with caplog.at_level(logging.INFO):
        assert main(["fit", str(sim.bids_dir), str(out), *FIT]) == 0
    assert "QC: excluded 4 of 10 runs, and 1 subject(s) without a run left: sub-04" in caplog.text

    table = pd.read_csv(out / "qc" / "runs.tsv", sep="\t", keep_default_na=False)
    excluded = table[table.status == "excluded"].set_index("run").reason.to_dict()
    assert set(excluded) == set(BAD)                                   # exactly those
    for run, reason in BAD.items():
        assert reason in excluded[run], (run, excluded[run])
    kept = table[table.status == "included"]
    assert (kept.fraction_L.astype(float) == 1).all() and (kept.tsnr.astype(float) > 20).all()

    with FingerprintStore(out / "work" / "fingerprints.h5") as store:
        assert store.subjects == ["01", "02", "03", "05"]
        mask = dict(zip(store.subjects, store.session_mask.tolist()))
        assert mask["02"] == [False, True] and mask["03"] == [True, False] and mask["01"] == [True, True]
        whole = read_run_timeseries(out / "work" / "timeseries" / "sub-01_ses-01_task-rest_run-1.h5")
        np.testing.assert_array_equal(store.vertex_index, whole.vertex_index)   # both hemispheres, every vertex
    assert (out / "sub-02" / "anat").is_dir() and not (out / "sub-04").exists()

    report = (out / "report.html").read_text()
    assert "<b>4 excluded</b>" in report and "sub-04" in report and "no valid vertex in the left hemisphere" in report
    warnings = assert_bids_valid(out)
    assert {w["code"] for w in warnings} <= EXPECTED_WARNINGS, warnings


def test_strict_setting_makes_any_exclusion_one_line_and_exit_2(cohort, capsys):
    sim, root = cohort
    out = root / "strict"
    capsys.readouterr()
    assert main(["fit", str(sim.bids_dir), str(out), *FIT, "qc.on_exclusion=error"]) == 2
    err = capsys.readouterr().err
    message = err[err.index("pavi-parcel: error:"):].strip()
    assert len(message.splitlines()) == 1 and "4 run(s) failed the quality gates" in message
    assert "qc.on_exclusion=exclude" in message and not out.exists()
