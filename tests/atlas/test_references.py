"""Shipped Yeo 2011 atlases and user segmentations."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.gifti import GiftiDataArray, GiftiImage, GiftiLabel, GiftiLabelTable

from pavi_parcel.atlas.references import YEO7_NAMES, YEO17_NAMES, load_atlas, load_yeo
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.spaces import FsaverageSpace


def _pial_coordinates() -> np.ndarray:
    from nilearn.datasets import load_fsaverage

    pial = load_fsaverage("fsaverage5")["pial"]
    return np.concatenate([np.asarray(pial.parts[h].coordinates) for h in ("left", "right")])


@pytest.mark.parametrize("k, names", [(7, YEO7_NAMES), (17, YEO17_NAMES)])
def test_yeo_shapes_names_colours(k, names):
    atlas = load_yeo(k)
    assert atlas.labels.shape == (20484,)
    assert int((atlas.labels > 0).sum()) == 18715
    assert set(np.unique(atlas.labels)) == set(range(k + 1))
    assert atlas.names == names
    assert atlas.colors.shape == (k, 3) and atlas.colors.dtype == np.uint8
    assert tuple(atlas.colors[0]) == (120, 18, 134)          # visual (central) purple in both atlases
    # every network on both hemispheres
    for hemi in (atlas.labels[:10242], atlas.labels[10242:]):
        assert set(np.unique(hemi)) == set(range(k + 1))


def test_yeo7_and_yeo17_share_the_medial_wall():
    assert np.array_equal(load_yeo(7).labels == 0, load_yeo(17).labels == 0)


def test_yeo_networks_sit_where_they_belong():
    """Planted anatomy: visual is occipital, limbic A is the temporal pole, limbic B is orbitofrontal."""
    xyz = _pial_coordinates()
    yeo7, yeo17 = load_yeo(7).labels, load_yeo(17).labels
    assert xyz[yeo7 == 1, 1].mean() < -60                      # Visual: posterior
    assert xyz[yeo7 == 5, 2].mean() < -15                      # Limbic: ventral
    assert xyz[yeo17 == 9, 2].mean() < -25 and xyz[yeo17 == 9, 1].mean() < 10     # LimbicA: temporal pole
    assert xyz[yeo17 == 10, 1].mean() > 20                     # LimbicB: orbitofrontal
    assert np.all(xyz[:10242][yeo7[:10242] > 0, 0].mean() < 0)  # left hemisphere first


@pytest.mark.parametrize("spec", ["yeo7", "YEO7", " yeo17 "])
def test_load_atlas_names(spec):
    k = 7 if "7" in spec and "17" not in spec else 17
    assert np.array_equal(load_atlas(spec).labels, load_yeo(k).labels)


@pytest.mark.parametrize("spec", ["yeo8", "schaefer400", "/no/such/file_hemi-L.label.gii"])
def test_bad_specs_raise(spec):
    with pytest.raises(BadInputError):
        load_atlas(spec)


def _write_label_pair(folder, left, right, table: dict[int, tuple[str, tuple]], name="atlas"):
    paths = []
    for hemi, data in (("L", left), ("R", right)):
        lt = GiftiLabelTable()
        for key, (label, rgb) in table.items():
            entry = GiftiLabel(key=key, red=rgb[0] / 255, green=rgb[1] / 255, blue=rgb[2] / 255, alpha=1.0)
            entry.label = label
            lt.labels.append(entry)
        img = GiftiImage(darrays=[GiftiDataArray(data.astype(np.int32), intent="NIFTI_INTENT_LABEL",
                                                 datatype="NIFTI_TYPE_INT32")], labeltable=lt)
        path = folder / f"{name}_hemi-{hemi}_dseg.label.gii"
        nib.save(img, path)
        paths.append(path)
    return paths


def test_gifti_pair_round_trip_with_renumbering(tmp_path):
    yeo = load_yeo(7)
    raw = yeo.labels * 10                                       # keys 10, 20, ..., 70
    table = {0: ("???", (0, 0, 0))}
    table.update({10 * (i + 1): (name, tuple(int(c) for c in yeo.colors[i])) for i, name in enumerate(yeo.names)})
    left, _ = _write_label_pair(tmp_path, raw[:10242], raw[10242:], table)
    atlas = load_atlas(left)
    assert np.array_equal(atlas.labels, yeo.labels)
    assert atlas.names == yeo.names
    assert np.array_equal(atlas.colors, yeo.colors)


def test_gifti_on_a_denser_fsaverage_mesh_is_reduced_to_the_space(tmp_path):
    yeo = load_yeo(17)
    dense = np.zeros(40962, dtype=np.int32)
    table = {k: (f"net{k}", (k, k, k)) for k in range(18)}
    left_dense, right_dense = dense.copy(), dense.copy()
    left_dense[:10242], right_dense[:10242] = yeo.labels[:10242], yeo.labels[10242:]
    left_dense[10242:], right_dense[10242:] = 3, 5               # finer vertices are ignored
    left, _ = _write_label_pair(tmp_path, left_dense, right_dense, table)
    assert np.array_equal(load_atlas(left, FsaverageSpace("fsaverage5")).labels, yeo.labels)
    own = load_atlas(left)  # without a space: on its own mesh
    assert own.space == "fsaverage6" and own.n_total == 2 * 40962


def test_gifti_missing_right_hemisphere(tmp_path):
    yeo = load_yeo(7)
    left, right = _write_label_pair(tmp_path, yeo.labels[:10242], yeo.labels[10242:], {1: ("a", (1, 2, 3))})
    right.unlink()
    with pytest.raises(BadInputError, match="Right hemisphere"):
        load_atlas(left)


def test_gifti_wrong_mesh_size(tmp_path):
    left, _ = _write_label_pair(tmp_path, np.ones(500), np.ones(500), {1: ("a", (1, 2, 3))})
    with pytest.raises(BadInputError, match="fsaverage"):
        load_atlas(left)


def test_nifti_with_tsv(tmp_path):
    data = np.zeros((4, 5, 6), dtype=np.int16)
    data[1, 2, 3] = 7
    data[2:, :, :2] = 3
    path = tmp_path / "tpl-test_dseg.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    (tmp_path / "tpl-test_dseg.tsv").write_text("index\tname\tcolor\n3\tMotor\t#ff0000\n7\tVision\t#00FF10\n")
    atlas = load_atlas(path)
    assert atlas.grid_shape == (4, 5, 6) and atlas.space == "volume"
    assert atlas.names == ["Motor", "Vision"]
    assert atlas.colors.tolist() == [[255, 0, 0], [0, 255, 16]]
    flat = np.ravel_multi_index((1, 2, 3), (4, 5, 6))
    assert atlas.labels[flat] == 2 and atlas.labels[0] == 0
    assert int((atlas.labels == 1).sum()) == int((data == 3).sum())


def test_nifti_without_tsv_gets_generic_names_and_colours(tmp_path):
    data = np.zeros((3, 3, 3), dtype=np.uint8)
    data[0] = 1
    data[2] = 2
    path = tmp_path / "seg.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    atlas = load_atlas(path)
    assert atlas.names == ["Network1", "Network2"]
    assert atlas.colors.shape == (2, 3) and len({tuple(c) for c in atlas.colors}) == 2


def test_nifti_4d_is_refused(tmp_path):
    path = tmp_path / "prob.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3, 2), dtype=np.float32), np.eye(4)), path)
    with pytest.raises(BadInputError, match="3-D"):
        load_atlas(path)
