"""fsLR CIFTI and fsaverage6 GIFTI cohorts through `pavi-parcel fit`, from the simulator's files to the maps.

The fsaverage6 mesh is not on this machine (nilearn ships fsaverage5 only): the first fit finds
none and says so; the second is given the simulator's mesh folder with ``data.mesh_dir``.
"""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pavi_parcel.cli import main
from pavi_parcel.simulate import simulate_dataset
from pavi_parcel.simulate.truth import load_truth
from pavi_parcel.spaces.fslr import FSLR_VERTICES, standard_cortex
from pavi_parcel.spaces.meshes import find_fsaverage_mesh
from pavi_parcel.stores.posterior import read_posterior
from pavi_parcel.validation.scoring import truth_metrics
from tests.bids_validator import EXPECTED_WARNINGS, assert_bids_valid

pytestmark = pytest.mark.slow
K = 7
FIT = ["--n-networks", str(K), "--device", "cpu", "seed=1", "fit.max_minutes=1.5", "n_jobs=1", "fit.num_threads=2"]


def _simulate(root, space):
    return simulate_dataset(root / "sim", n_subjects=3, n_sessions=2, n_frames=150, n_networks=K, seed=5,
                            space=space, progress=False)


def _scores(out, sim) -> pd.DataFrame:
    return truth_metrics(read_posterior(out / "model" / "posterior.h5"), load_truth(sim.truth_dir))


def test_fslr_cifti_cohort_end_to_end(tmp_path, caplog):
    sim = _simulate(tmp_path, "fsLR")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        assert main(["fit", str(sim.bids_dir), str(out), *FIT]) == 0          # --space auto finds fsLR
    assert "subcortical grayordinates (31,870 in a 91k file) are read past" in caplog.text
    scores = _scores(out, sim)
    assert scores.ari.mean() > 0.7 and scores.ece.mean() < 0.1

    names = pd.read_csv(out / f"seg-pavi{K}_dseg.tsv", sep="\t")["name"].tolist()
    folder = out / "sub-01" / "anat"
    stem = f"sub-01_space-fsLR_seg-pavi{K}_den-91k"
    probseg = nib.load(str(folder / f"{stem}_probseg.dscalar.nii"))
    assert list(probseg.header.get_axis(0).name) == names                # one map per network, named after it
    probs = np.asarray(probseg.dataobj)
    assert probs.shape == (K, 59412)
    labelled = probs.sum(axis=0) > 0
    assert np.allclose(probs[:, labelled].sum(axis=0), 1.0, atol=1e-4) and labelled.mean() > 0.95
    dlabel = nib.load(str(folder / f"{stem}_dseg.dlabel.nii"))
    table = dlabel.header.get_axis(0).label[0]
    assert [table[k][0] for k in sorted(table)] == ["???", *names]
    hard = np.asarray(dlabel.dataobj)[0]
    assert np.array_equal(hard[labelled], probs[:, labelled].argmax(axis=0) + 1)
    models = dlabel.header.get_axis(1)
    left = next(v for n, _, v in models.iter_structures() if n == "CIFTI_STRUCTURE_CORTEX_LEFT")
    assert np.array_equal(left.vertex, standard_cortex()["L"]) and left.nvertices["CIFTI_STRUCTURE_CORTEX_LEFT"] \
        == FSLR_VERTICES
    entropy = nib.load(str(folder / f"{stem}_stat-entropy_statmap.dscalar.nii"))
    assert np.asarray(entropy.dataobj).shape == (1, 59412)
    assert (out / "group" / f"space-fsLR_seg-pavi{K}_den-91k_probseg.dscalar.nii").is_file()   # the group atlas
    report = (out / "report.html").read_text()
    assert "<img" in report and "No fsLR mesh" not in report
    warnings = assert_bids_valid(out)     # dlabel dseg recognised; dscalar soft maps in .bidsignore
    assert {w["code"] for w in warnings} <= EXPECTED_WARNINGS, warnings
    assert json.loads((folder / f"{stem}_dseg.json").read_text())["SpatialReference"][
        "CIFTI_STRUCTURE_CORTEX_LEFT"].endswith("tpl-fsLR_hemi-L_den-32k_sphere.surf.gii")


def test_fsaverage6_cohort_with_and_without_a_mesh(tmp_path, monkeypatch, caplog):
    for variable in ("SUBJECTS_DIR", "NILEARN_DATA"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "templateflow"))
    find_fsaverage_mesh.cache_clear()
    sim = _simulate(tmp_path, "fsaverage6")
    bare, meshed = tmp_path / "bare", tmp_path / "meshed"
    with caplog.at_level(logging.INFO):
        assert main(["fit", str(sim.bids_dir), str(bare), *FIT, "model.potts_beta=0.5"]) == 0
    assert "No fsaverage6 mesh found" in caplog.text and "without the Potts smoothness term" in caplog.text
    assert "No fsaverage6 mesh" in (bare / "report.html").read_text()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert main(["fit", str(sim.bids_dir), str(meshed), *FIT, "model.potts_beta=0.5",
                     f"data.mesh_dir={sim.mesh_dir}"]) == 0
    assert "No fsaverage6 mesh found" not in caplog.text
    find_fsaverage_mesh.cache_clear()

    smooth, plain = _scores(meshed, sim), _scores(bare, sim)
    assert plain.ari.mean() > 0.7 and smooth.ari.mean() > plain.ari.mean() - 0.02
    gifti = nib.load(str(meshed / "sub-01" / "anat" / f"sub-01_hemi-L_space-fsaverage6_seg-pavi{K}_probseg.func.gii"))
    assert len(gifti.darrays) == K and gifti.darrays[0].data.shape == (40962,)
    assert "<img" in (meshed / "report.html").read_text()
    warnings = assert_bids_valid(meshed)
    assert {w["code"] for w in warnings} <= EXPECTED_WARNINGS, warnings
