"""Several scales in one command: one ingest and store, one derivative per scale, nested maps that sum exactly."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from pavi_parcel.cli import main
from pavi_parcel.simulate import simulate_dataset

pytestmark = pytest.mark.slow


def _probseg(folder, label, k, hemi="L"):
    path = folder / f"sub-{label}" / "anat" / f"sub-{label}_hemi-{hemi}_space-fsaverage5_seg-pavi{k}_probseg.func.gii"
    return np.stack([d.data for d in nib.load(path).darrays], axis=1)        # (n_vertices, K), label order


def test_nested_scales_share_one_store_and_coarse_maps_are_sums_of_their_children(tmp_path):
    sim = simulate_dataset(tmp_path / "sim", n_subjects=3, n_sessions=2, n_frames=120, n_networks=6, seed=1,
                           layout="procedural", progress=False)
    out = tmp_path / "out"
    command = ["fit", str(sim.bids_dir), str(out), "--n-networks", "3", "6", "--device", "cpu", "n_jobs=1",
               "fit.max_minutes=1", "model.nested=true", "export.report=false", "connectome.enabled=false"]
    assert main(command) == 0
    coarse, fine = out / "pavi3", out / "pavi6"
    assert (out / "work" / "fingerprints.h5").is_file() and not (coarse / "work").exists()
    assert (coarse / "model" / "posterior_independent.h5").is_file()
    parents = pd.read_csv(fine / "seg-pavi6_parents-pavi3.tsv", sep="\t")
    assert parents["index"].tolist() == list(range(1, 7))
    assert sorted(set(parents["parent_index"])) == [1, 2, 3]               # every coarse network has a child
    assert "*_parents-pavi*" in (fine / ".bidsignore").read_text()

    def check_sums():
        for label in sim.subjects:
            for hemi in "LR":
                p_fine, p_coarse = _probseg(fine, label, 6, hemi), _probseg(coarse, label, 3, hemi)
                for c in range(1, 4):
                    children = parents.loc[parents.parent_index == c, "index"].to_numpy() - 1
                    assert np.abs(p_fine[:, children].sum(axis=1) - p_coarse[:, c - 1]).max() < 1e-5

    check_sums()
    assert main(command) == 0                                                # a rerun resumes and nests again
    check_sums()
    assert main(["fit", str(sim.bids_dir), str(out), "--n-networks", "3", "6", "--multirun"]) == 2
