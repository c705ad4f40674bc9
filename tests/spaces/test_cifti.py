"""fsLR CIFTI-2: dense time series read through nibabel, maps written as Workbench reads them, seeds, the space."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial import cKDTree

from pavi_parcel.atlas.references import load_yeo
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.spaces import FslrSpace, space_from_attrs, space_named
from pavi_parcel.spaces.cifti import read_cortex, read_dense_maps, scan_cifti
from pavi_parcel.spaces.fslr import FSLR_VERTICES, standard_cortex
from tests.builders import write_cifti_run

ENTS = {"sub": "01", "ses": "01", "task": "rest"}


def test_the_cortex_of_a_91k_series_is_read_column_by_column(tmp_path):
    path = write_cifti_run(tmp_path, ENTS, n_frames=12, step=0.72)
    header = scan_cifti(path)
    assert (header.n_frames, header.step, header.n_grayordinates) == (12, pytest.approx(0.72), 91282)
    assert header.n_cortex == 59412 and header.surface_vertices == {"L": FSLR_VERTICES, "R": FSLR_VERTICES}
    cortex = read_cortex(path, header)
    full = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    for hemi, offset in (("L", 0), ("R", 29696)):
        columns, vertices = header.cortex[hemi]
        assert np.array_equal(vertices, standard_cortex()[hemi])
        assert np.array_equal(cortex[hemi], full[:, offset:offset + vertices.size])
        assert columns == slice(offset, offset + vertices.size)


@pytest.mark.parametrize("kwargs, needle", [
    ({"kind": "dscalar"}, "is a dscalar"),
    ({"kind": "dlabel"}, "is a dlabel"),
    ({"unit": "HERTZ"}, "The series axis of"),
    ({"structures": ""}, "lacks cortical grayordinates"),
    ({"structures": "L"}, "lacks cortical grayordinates"),
])
def test_files_that_are_not_a_cortical_dense_series_are_named(kwargs, needle, tmp_path):
    path = write_cifti_run(tmp_path, ENTS, n_frames=3, **kwargs)
    with pytest.raises(BadInputError, match=needle):
        scan_cifti(path)


def test_a_nifti_1_file_named_as_cifti_is_not_cifti(tmp_path):
    path = tmp_path / "sub-01_task-rest_space-fsLR_den-91k_bold.dtseries.nii"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), str(path))
    with pytest.raises(BadInputError, match="is not a CIFTI-2 file"):
        scan_cifti(path)


def test_run_checks_of_the_space(tmp_path):
    space = FslrSpace()
    good = write_cifti_run(tmp_path, ENTS, n_frames=5)
    header = space.scan_run([good], None, "run")
    assert (header.n_frames, header.n_points) == (5, 59412)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    cortex_only = write_cifti_run(tmp_path / "a", ENTS, n_frames=5, subcortex=False)
    with pytest.raises(BadInputError, match="59,412 grayordinates.*91,282"):
        space.scan_run([cortex_only], None, "run")
    coarse = write_cifti_run(tmp_path / "b", ENTS, n_frames=5, n_hemi=10242, den="10k", subcortex=False)
    with pytest.raises(BadInputError, match="10,242-vertex CIFTI_STRUCTURE_CORTEX_LEFT"):
        space.scan_run([coarse], None, "run")


def test_maps_are_cifti_named_after_the_networks(tmp_path):
    space = FslrSpace()
    paths = space.map_paths(tmp_path, "sub-01_", "seg-pavi3")
    assert [p.name for p in paths["probseg"] + paths["dseg"] + paths["entropy"]] == [
        "sub-01_space-fsLR_seg-pavi3_den-91k_probseg.dscalar.nii",
        "sub-01_space-fsLR_seg-pavi3_den-91k_dseg.dlabel.nii",
        "sub-01_space-fsLR_seg-pavi3_den-91k_stat-entropy_statmap.dscalar.nii"]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=space.n_total).astype(np.float32)
    labels = probs.argmax(1) + 1
    names, colors = ["Visual", "Motor", "Default"], np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    space.write_map("probseg", probs, paths["probseg"], names, colors)
    space.write_map("dseg", labels, paths["dseg"], names, colors)
    space.write_map("entropy", probs[:, 0], paths["entropy"], names, colors)

    rows = np.r_[standard_cortex()["L"], FSLR_VERTICES + standard_cortex()["R"]]
    axis, maps = read_dense_maps(paths["probseg"][0])
    assert list(axis.name) == names
    img = nib.load(str(paths["probseg"][0]))
    assert img.nifti_header.get_intent()[0] == "ConnDenseScalar"
    assert np.allclose(np.asarray(img.dataobj).T, probs[rows])
    models = img.header.get_axis(1)
    assert len(models) == 59412 and {n for n, _, _ in models.iter_structures()} == {
        "CIFTI_STRUCTURE_CORTEX_LEFT", "CIFTI_STRUCTURE_CORTEX_RIGHT"}
    label = nib.load(str(paths["dseg"][0]))
    table = label.header.get_axis(0).label[0]
    assert label.nifti_header.get_intent()[0] == "ConnDenseLabel"
    assert [table[k][0] for k in sorted(table)] == ["???", *names]
    assert np.allclose(table[2][1], (0.0, 1.0, 0.0, 1.0))
    assert np.array_equal(np.asarray(label.dataobj)[0], labels[rows])
    assert list(nib.load(str(paths["entropy"][0])).header.get_axis(0).name) == ["entropy"]


def test_default_seeds_cover_the_sphere_evenly():
    space = FslrSpace()
    cortex = np.r_[standard_cortex()["L"], FSLR_VERTICES + standard_cortex()["R"]]
    seeds = space.default_seeds(cortex, 12.0)
    assert 1100 <= seeds.size <= 1175 and np.isin(seeds, cortex).all() and np.unique(seeds).size == seeds.size
    assert space.estimate_seeds(cortex.size, 12.0) >= seeds.size
    sphere = space.sphere()
    for hemi in space.hemispheres:
        points = sphere[hemi.name] / np.linalg.norm(sphere[hemi.name], axis=1, keepdims=True)
        mine = seeds[(seeds >= hemi.start) & (seeds < hemi.stop)] - hemi.start
        on_cortex = cortex[(cortex >= hemi.start) & (cortex < hemi.stop)] - hemi.start
        distance, _ = cKDTree(points[mine]).query(points[on_cortex])
        spacing, _ = cKDTree(points[mine]).query(points[mine], k=2)
        # an order-3 icosphere: seeds 0.13-0.15 rad apart; cortex a half-spacing from its nearest seed,
        # a whole spacing at most (by the medial wall, where the nearest icosphere point has no seed)
        assert np.quantile(distance, 0.99) < 0.1 and distance.max() < 0.15
        assert 0.12 < spacing[:, 1].min() and spacing[:, 1].max() < 0.16


def test_space_by_name_and_from_stored_attributes():
    space = space_named("fsLR")
    assert isinstance(space, FslrSpace) and space.n_total == 2 * FSLR_VERTICES and space.map_format == "cifti"
    attrs: dict = {}
    space.to_attrs(attrs)
    assert space_from_attrs(attrs) == space


def test_yeo_on_fslr_has_the_anatomy_of_the_fsaverage_atlas():
    """Each network covers about the same share of cortex in both spaces, and sits where it should."""
    space = FslrSpace()
    for k in (7, 17):
        fslr, fsavg = load_yeo(k, space), load_yeo(k)
        assert fslr.names == fsavg.names and np.array_equal(fslr.colors, fsavg.colors)
        assert 58000 < (fslr.labels > 0).sum() <= 59412
        share = [np.bincount(a.labels[a.labels > 0], minlength=k + 1)[1:] / (a.labels > 0).sum()
                 for a in (fslr, fsavg)]
        assert np.abs(share[0] - share[1]).max() < 0.03
    midthickness = space.surfaces("midthickness")
    y = np.concatenate([s.coordinates[:, 1] for s in midthickness.values()])
    yeo7 = load_yeo(7, space).labels
    assert y[yeo7 == 1].mean() < -60 < y[yeo7 == 7].mean()   # visual at the back, default mode further forward
