"""Spaces: sizes and hemispheres, default seeds, neighbours, nested meshes, map files, stored attributes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.spaces import FsaverageSpace, VolumeSpace, space_from_attrs, space_named
from pavi_parcel.spaces.gifti import scan_gifti


def test_fsaverage_densities_are_instances_of_one_class():
    for name, n_hemi in (("fsaverage5", 10242), ("fsaverage6", 40962), ("fsaverage", 163842)):
        space = FsaverageSpace(name)
        assert space.n_total == 2 * n_hemi and space.is_surface and space.map_format == "gifti"
        left, right = space.hemispheres
        assert (left.label, left.start, left.stop, right.start, right.stop) == ("L", 0, n_hemi, n_hemi, 2 * n_hemi)
    assert space_named("fsaverage6") == FsaverageSpace("fsaverage6")
    assert space_named("MNI152NLin6Asym") == VolumeSpace("MNI152NLin6Asym")
    with pytest.raises(BadInputError, match="Unsupported surface space 'fsavg'"):
        space_named("fsavg")


def test_surface_seeds_are_the_fsaverage3_vertices_on_cortex():
    space = FsaverageSpace("fsaverage5")
    valid = np.setdiff1d(np.arange(space.n_total), [0, 10242 + 641])
    seeds = space.default_seeds(valid, 12.0)
    assert seeds.size == 2 * 642 - 2
    assert seeds.max() == 10242 + 640 and 0 not in seeds
    six = FsaverageSpace("fsaverage6")  # nested icosahedra: the same seeds, the right hemisphere further on
    assert np.array_equal(six.default_seeds(np.arange(six.n_total), 12.0),
                          np.r_[np.arange(642), 40962 + np.arange(642)])


def test_volume_seeds_tile_the_mask():
    space = VolumeSpace("MNI152NLin2009cAsym", (10, 10, 10), np.diag([2.0, 2.0, 2.0, 1.0]))
    seeds = space.default_seeds(np.arange(1000), spacing_mm=10.0)
    assert seeds.size == 8  # a 20 mm cube cut into 10 mm cubes
    ijk = np.stack(np.unravel_index(seeds, (10, 10, 10)), 1)
    assert {tuple(v) for v in (ijk * 2 // 10)} == {(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)}


def test_neighbours_of_a_mesh_and_a_grid():
    mesh = FsaverageSpace("fsaverage5").edges()
    degree = np.bincount(np.r_[mesh[:, 0], mesh[:, 1]], minlength=20484) // 2   # each edge seen from both faces
    assert mesh.max() < 20484 and set(np.unique(degree)) == {5, 6}   # an icosahedron: 12 vertices of degree 5
    assert (degree == 5).sum() == 2 * 12
    assert not np.isin(mesh[mesh[:, 0] < 10242, 1], np.arange(10242, 20484)).any()   # hemispheres apart
    grid = VolumeSpace("x", (2, 3, 1), np.eye(4)).edges()
    assert sorted(map(tuple, grid)) == [(0, 1), (0, 3), (1, 2), (1, 4), (2, 5), (3, 4), (4, 5)]


def test_atlases_on_denser_nested_meshes_are_read_on_the_coarser_one():
    five = FsaverageSpace("fsaverage5")
    left, right = np.arange(40962), 100000 + np.arange(40962)   # fsaverage6 values
    full = five.from_nested([left, right], "an atlas")
    assert np.array_equal(full, np.r_[np.arange(10242), 100000 + np.arange(10242)])
    with pytest.raises(BadInputError, match="not on an fsaverage mesh"):
        FsaverageSpace("fsaverage6").from_nested([np.arange(10242), np.arange(10242)], "a coarse atlas")


def test_map_files_follow_the_space(tmp_path):
    surface = FsaverageSpace("fsaverage6").map_paths(tmp_path, "sub-01_", "seg-pavi7")
    assert [p.name for p in surface["dseg"]] == ["sub-01_hemi-L_space-fsaverage6_seg-pavi7_dseg.label.gii",
                                                 "sub-01_hemi-R_space-fsaverage6_seg-pavi7_dseg.label.gii"]
    volume = VolumeSpace("MNI152NLin6Asym", (2, 2, 2), np.eye(4)).map_paths(tmp_path, "", "seg-pavi7")
    assert [p.name for p in volume["probseg"]] == ["space-MNI152NLin6Asym_seg-pavi7_probseg.nii.gz"]


def test_written_maps_read_back_on_their_mesh(tmp_path):
    space = FsaverageSpace("fsaverage5")
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=space.n_total).astype(np.float32)
    paths = space.map_paths(tmp_path, "", "seg-pavi3")["probseg"]
    space.write_map("probseg", probs, paths, ["A", "B", "C"], np.zeros((3, 3), np.uint8))
    for hemi, path in zip(space.hemispheres, paths):
        img = nib.load(path)
        assert img.meta["AnatomicalStructurePrimary"] == hemi.structure and space.hemisphere_of(path) == hemi.label
        assert [d.meta["Name"] for d in img.darrays] == ["A", "B", "C"]
        np.testing.assert_array_equal(np.stack([d.data for d in img.darrays], 1), probs[hemi.rows])
        assert scan_gifti(path) == (10242, 3)


def test_stored_attributes_give_the_space_back():
    for space in (FsaverageSpace("fsaverage5"), VolumeSpace("MNI152NLin2009cAsym", (4, 5, 6), np.diag([2, 2, 2, 1]))):
        back = space_from_attrs(space.attrs())
        assert back == space and back.n_total == space.n_total and type(back) is type(space)
    with pytest.raises(BadInputError, match="has 40 points"):
        space_from_attrs({"space": "fsaverage5", "n_total": 40})
