"""Export of posteriors as BIDS-derivative maps: planted posteriors, reloaded with nibabel."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pavi_parcel.atlas.naming import PALETTE, match_to_reference, read_label_table
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.export.maps import export_maps, sidecar_path
from pavi_parcel.export.stage import export_stage
from pavi_parcel.io.files import write_json
from pavi_parcel.settings.compose import to_yaml
from pavi_parcel.settings.schema import ExportSettings, RunSettings
from pavi_parcel.spaces import FsaverageSpace, VolumeSpace
from pavi_parcel.spaces.gifti import save_image
from pavi_parcel.stores.posterior import Posterior, write_posterior
from tests.bids_validator import EXPECTED_WARNINGS, assert_bids_valid

N_HEMI = 10242
MEDIAL = np.r_[np.arange(0, 2 * N_HEMI, 7), np.arange(3000, 3500), np.arange(N_HEMI + 5000, N_HEMI + 5600)]
CORTEX = np.setdiff1d(np.arange(2 * N_HEMI), MEDIAL)


def sharp_probs(labels: np.ndarray, k: int, rng: np.random.Generator, sharpness: float = 4.0) -> np.ndarray:
    """Probabilities of shape (n, k) whose argmax is ``labels`` (0-based)."""
    logits = rng.normal(0.0, 0.3, (labels.size, k))
    logits[np.arange(labels.size), labels] += sharpness
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def surface_posterior(group_labels: np.ndarray, k: int, n_subjects: int = 2, seed: int = 0,
                      flip: float = 0.05) -> Posterior:
    """fsaverage5 posterior on CORTEX; subjects copy the group labels with a few flips."""
    rng = np.random.default_rng(seed)
    subjects = []
    for _ in range(n_subjects):
        lab = group_labels.copy()
        flips = rng.random(lab.size) < flip
        lab[flips] = rng.integers(0, k, flips.sum())
        subjects.append(sharp_probs(lab, k, rng))
    return Posterior(np.stack(subjects), sharp_probs(group_labels, k, rng), rng.normal(size=(k, 16)).astype(np.float32),
                     [f"{i + 1:02d}" for i in range(n_subjects)], ["1", "2"], CORTEX,
                     FsaverageSpace("fsaverage5"), {"method": "pavi_e", "settings": {"seed": seed}})


def write_run(out: Path, post: Posterior, bids_dir: Path | None = None) -> Path:
    write_posterior(out / "model" / "posterior.h5", post)
    if bids_dir is not None:
        (out / "model" / "config.yaml").write_text(to_yaml(RunSettings(bids_dir=bids_dir, out_dir=out, seed=11)))
    return out


def write_gifti_reference(folder: Path, labels_full: np.ndarray, names: list[str], colors: np.ndarray) -> Path:
    """A user reference as a hemi-L/hemi-R pair of .label.gii files; returns the hemi-L path."""
    for h, part in (("L", labels_full[:N_HEMI]), ("R", labels_full[N_HEMI:])):
        table = nib.gifti.GiftiLabelTable()
        for key, name, rgb in [(0, "???", (0, 0, 0))] + [(i + 1, n, tuple(c)) for i, (n, c) in
                                                          enumerate(zip(names, colors))]:
            lab = nib.gifti.GiftiLabel(key, *(v / 255 for v in rgb), 1.0)
            lab.label = name
            table.labels.append(lab)
        img = nib.gifti.GiftiImage(labeltable=table)
        img.add_gifti_data_array(nib.gifti.GiftiDataArray(part.astype(np.int32), intent="NIFTI_INTENT_LABEL",
                                                          datatype="NIFTI_TYPE_INT32"))
        nib.save(img, str(folder / f"atlas_hemi-{h}.label.gii"))
    return folder / "atlas_hemi-L.label.gii"


def load_surface_set(folder: Path, prefix: str, k: int) -> dict[str, np.ndarray]:
    """Reload one subject's (or the group's) surface maps, both hemispheres concatenated."""
    paths = FsaverageSpace("fsaverage5").map_paths(folder, prefix, f"seg-pavi{k}")
    out: dict[str, np.ndarray] = {}
    for kind in ("probseg", "dseg", "entropy"):
        parts = []
        for path in paths[kind]:
            img = nib.load(str(path))
            parts.append(np.stack([d.data for d in img.darrays], axis=1) if kind == "probseg"
                         else np.asarray(img.darrays[0].data))
        out[kind] = np.concatenate(parts)
    out["labeltable"] = nib.load(str(paths["dseg"][0])).labeltable.get_labels_as_dict()
    return out


@pytest.fixture()
def surface_run(tmp_path: Path) -> tuple[Path, Posterior, list[Path]]:
    k = 4
    group = (CORTEX // 500) % k
    post = surface_posterior(group, k, n_subjects=2)
    bids = tmp_path / "bids"
    bids.mkdir()
    out = write_run(tmp_path / "out", post, bids)
    return out, post, export_maps(out)


def test_surface_maps_reload_as_valid_probabilities_and_labels(surface_run):
    out, post, written = surface_run
    k = post.n_networks
    sets = [(out / "group", "", post.group_probs)] + [
        (out / f"sub-{s}" / "anat", f"sub-{s}_", post.subject_probs[i]) for i, s in enumerate(post.subjects)]
    for folder, prefix, planted in sets:
        maps = load_surface_set(folder, prefix, k)
        probs, dseg, ent = maps["probseg"], maps["dseg"], maps["entropy"]
        assert probs.shape == (2 * N_HEMI, k) and probs.dtype == np.float32
        assert probs.min() >= 0 and probs.max() <= 1
        np.testing.assert_allclose(probs[CORTEX].sum(axis=1), 1.0, atol=1e-5)
        assert np.all(probs[MEDIAL] == 0)
        np.testing.assert_allclose(probs[CORTEX], planted / planted.sum(1, keepdims=True), atol=1e-6)
        assert set(np.unique(dseg[CORTEX])) <= set(range(1, k + 1)) and np.all(dseg[MEDIAL] == 0)
        np.testing.assert_array_equal(dseg[CORTEX], np.argmax(planted, axis=1) + 1)
        assert maps["labeltable"] == {0: "Unknown", **{i + 1: f"Network{i + 1:02d}" for i in range(k)}}
        assert ent.min() >= 0 and ent.max() <= 1 and np.all(ent[MEDIAL] == 0)
        p = planted.astype(np.float64)
        expected = -(p * np.log(p)).sum(1) / np.log(k)
        np.testing.assert_allclose(ent[CORTEX], expected, atol=1e-4)
    on_disk = {p for p in out.rglob("*") if p.is_file() and "model" not in p.parts}
    assert on_disk == set(written)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_sidecars_description_label_table_and_bidsignore(surface_run):
    out, post, written = surface_run
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "pavi-parcel" and desc["GeneratedBy"][0]["Version"]
    assert desc["GeneratedBy"][0]["CodeURL"].startswith("https://")
    assert desc["SourceDatasets"] == [{"URL": (out.parent / "bids").resolve().as_uri()}]
    table = (out / "seg-pavi4_dseg.tsv").read_text().splitlines()
    assert table[0].split("\t")[:3] == ["index", "name", "color"]
    assert [r.split("\t")[0] for r in table[1:]] == ["1", "2", "3", "4"]
    assert [r.split("\t")[2] for r in table[1:]] == list(PALETTE[:4])
    ignore = (out / ".bidsignore").read_text().split()
    assert {"/work", "/model", "/group", "/qc", "/report.html", "*_statmap.*", "*_probseg.func.gii"} <= set(ignore)
    assert "seg-pavi4_dseg.tsv" in (out / "README.md").read_text()
    maps = [p for p in written if p.suffix != ".json" and p.name.endswith((".gii", ".nii.gz"))]
    assert len(maps) == 3 * 6
    for path in maps:
        meta = json.loads(sidecar_path(path).read_text())
        assert meta["Method"] == "pavi_e" and meta["NumberOfNetworks"] == 4 and meta["Seed"] == 0
        assert meta["SpatialReference"].endswith(f"hemi-{meta['Hemisphere']}_den-10k_sphere.surf.gii")
        assert meta["ConfigHash"] and meta["SourcePosterior"] == "model/posterior.h5"
        if "stat-entropy" not in path.name:
            assert meta["LabelMap"] == {"1": "Network01", "2": "Network02", "3": "Network03", "4": "Network04"}


def test_the_bids_validator_accepts_the_derivative(surface_run):
    out, _, _ = surface_run
    warnings = assert_bids_valid(out)
    assert {w["code"] for w in warnings} <= EXPECTED_WARNINGS, warnings


def test_nilearn_plots_the_exported_maps(surface_run):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nilearn import plotting, surface
    from nilearn.datasets import load_fsaverage
    out, post, _ = surface_run
    paths = {kind: files[0] for kind, files in post.space.map_paths(out / "sub-01" / "anat", "sub-01_",
                                                                    f"seg-pavi{post.n_networks}").items()}
    soft = surface.load_surf_data(str(paths["probseg"]))
    assert soft.shape == (N_HEMI, post.n_networks)
    mesh = load_fsaverage("fsaverage5")["inflated"].parts["left"]
    fig = plotting.plot_surf_roi(mesh, str(paths["dseg"]), hemi="left", view="lateral", threshold=0.5)
    fig2 = plotting.plot_surf_stat_map(mesh, str(paths["entropy"]), hemi="left", colorbar=False)
    assert fig.axes and fig2.axes
    plt.close("all")


def test_hungarian_matching_undoes_a_planted_permutation(tmp_path: Path):
    names = ["Visual", "Motor", "Attention", "Default"]
    colors = np.array([[120, 18, 134], [70, 130, 180], [0, 118, 14], [205, 62, 78]], dtype=np.uint8)
    ref_full = np.zeros(2 * N_HEMI, dtype=np.int64)
    ref_full[CORTEX] = (CORTEX // 700) % 4 + 1
    ref = write_gifti_reference(tmp_path, ref_full, names, colors)
    planted = np.array([2, 0, 3, 1])          # reference network r is posterior network planted[r]
    post = surface_posterior(planted[ref_full[CORTEX] - 1], 4, n_subjects=2, flip=0.1)
    out = write_run(tmp_path / "out", post)
    export_maps(out, reference=str(ref))
    table = read_label_table(out / "seg-pavi4_dseg.tsv")
    assert table.names == names
    np.testing.assert_array_equal(table.order, planted)
    np.testing.assert_array_equal(table.colors, colors)
    for s in ["", "sub-01_", "sub-02_"]:
        folder = out / "group" if not s else out / f"sub-{s[4:6]}" / "anat"
        maps = load_surface_set(folder, s, 4)
        agree = np.mean(maps["dseg"][CORTEX] == ref_full[CORTEX])
        assert agree > (0.99 if not s else 0.85)       # same names on every subject's map
        assert maps["labeltable"] == {0: "Unknown", **{i + 1: n for i, n in enumerate(names)}}
    meta = json.loads((out / "group" / "hemi-L_space-fsaverage5_seg-pavi4_dseg.json").read_text())
    assert meta["LabelMap"] == {"1": "Visual", "2": "Motor", "3": "Attention", "4": "Default"}
    assert meta["Reference"] == str(ref)


def test_matching_with_more_networks_than_the_reference_gives_generic_names():
    ref = np.repeat([1, 2, 3], 100)
    ours = np.repeat([4, 1, 0, 2, 3], 60)     # networks 4, 1, 0 overlap reference 1, 2, 3 most
    table = match_to_reference(ours, ref, 5, ["A", "B", "C"], np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]]))
    assert table.names[:3] == ["A", "B", "C"] and table.names[3:] == ["Network04", "Network05"]
    assert sorted(table.order.tolist()) == [0, 1, 2, 3, 4]
    assert table.order.tolist() == [4, 0, 3, 1, 2]        # best Dice pairs, then posterior order
    np.testing.assert_allclose(table.dice[:3], 0.75)
    assert np.isnan(table.dice[3:]).all()
    assert len({tuple(c) for c in table.colors.tolist()}) == 5
    fewer = match_to_reference(np.repeat([1, 0], 150), ref, 2, ["A", "B", "C"], np.eye(3) * 255)
    assert fewer.names == ["A", "C"] and fewer.order.tolist() == [1, 0]


def test_yeo7_reference_names_a_permuted_yeo_map(tmp_path: Path):
    atlases = pytest.importorskip("pavi_parcel.atlas.references")
    yeo = atlases.load_atlas("yeo7")
    cortex = np.flatnonzero(yeo.labels > 0)
    perm = np.array([3, 6, 0, 5, 1, 4, 2])
    rng = np.random.default_rng(1)
    group = sharp_probs(perm[yeo.labels[cortex] - 1], 7, rng)
    post = Posterior(group[None], group, np.zeros((7, 4), np.float32), ["01"], ["1"], cortex,
                     FsaverageSpace("fsaverage5"), {"method": "vbem"})
    out = write_run(tmp_path / "out", post)
    export_maps(out, reference="yeo7")
    table = read_label_table(out / "seg-pavi7_dseg.tsv")
    assert table.names == list(yeo.names)
    np.testing.assert_array_equal(table.order, perm)


def volume_posterior(k: int = 3) -> Posterior:
    shape = (9, 11, 8)
    affine = np.array([[-3.0, 0, 0, 12.5], [0, 3.0, 0, -40.0], [0, 0, 3.5, -20.0], [0, 0, 0, 1]])
    rng = np.random.default_rng(3)
    inside = np.flatnonzero(rng.random(int(np.prod(shape))) < 0.7)
    labels = inside % k
    probs = sharp_probs(labels, k, rng)
    return Posterior(probs[None], probs, np.zeros((k, 5), np.float32), ["A1"], ["1"], inside,
                     VolumeSpace("MNI152NLin2009cAsym", shape, affine), {"method": "svi"})


def test_volume_maps_keep_the_source_affine(tmp_path: Path):
    post = volume_posterior()
    out = write_run(tmp_path / "out", post)
    written = export_maps(out, fmt="nifti")
    paths = {kind: files[0] for kind, files in post.space.map_paths(out / "sub-A1" / "anat", "sub-A1_",
                                                                    "seg-pavi3").items()}
    assert set(paths.values()) <= set(written)
    soft, hard, ent = (nib.load(str(paths[k])) for k in ("probseg", "dseg", "entropy"))
    for img in (soft, hard, ent):
        np.testing.assert_allclose(img.affine, post.space.affine)
    assert soft.shape == post.space.grid_shape + (3,)
    flat = np.asarray(soft.dataobj).reshape(-1, 3, order="C")
    outside = np.setdiff1d(np.arange(flat.shape[0]), post.vertex_index)
    np.testing.assert_allclose(flat[post.vertex_index].sum(1), 1.0, atol=1e-5)
    assert np.all(flat[outside] == 0)
    labels = np.asarray(hard.dataobj).reshape(-1, order="C")
    np.testing.assert_array_equal(labels[post.vertex_index], np.argmax(post.group_probs, 1) + 1)
    assert np.all(labels[outside] == 0)
    e = np.asarray(ent.dataobj)
    assert e.min() >= 0 and e.max() <= 1
    meta = json.loads(sidecar_path(paths["probseg"]).read_text())
    assert meta["LabelMap"] == {"1": "Network01", "2": "Network02", "3": "Network03"}
    assert (out / "group" / "space-MNI152NLin2009cAsym_seg-pavi3_dseg.nii.gz").exists()
    warnings = assert_bids_valid(out)      # volume probseg and dseg are BIDS anat segmentations
    assert {w["code"] for w in warnings} <= EXPECTED_WARNINGS, warnings


def test_volume_reference_on_a_finer_grid_names_the_networks(tmp_path: Path):
    post = volume_posterior(k=3)
    planted = np.array([1, 2, 0])                 # reference label r + 1 is posterior network planted[r]
    inverse = np.argsort(planted)
    coarse = np.zeros(post.space.n_total, dtype=np.int16)
    coarse[post.vertex_index] = inverse[np.argmax(post.group_probs, axis=1)] + 1
    fine = np.repeat(np.repeat(np.repeat(coarse.reshape(post.space.grid_shape), 2, 0), 2, 1), 2, 2)
    affine = post.space.affine.copy()
    affine[:3, :3] /= 2
    nib.save(nib.Nifti1Image(fine, affine), str(tmp_path / "ref_dseg.nii.gz"))
    (tmp_path / "ref_dseg.tsv").write_text("index\tname\tcolor\n1\tAlpha\t#102030\n2\tBeta\t#405060\n"
                                           "3\tGamma\t#708090\n")
    out = write_run(tmp_path / "out", post)
    export_maps(out, reference=str(tmp_path / "ref_dseg.nii.gz"))
    table = read_label_table(out / "seg-pavi3_dseg.tsv")
    assert table.names == ["Alpha", "Beta", "Gamma"] and table.hex_colors == ["#102030", "#405060", "#708090"]
    np.testing.assert_array_equal(table.order, planted)
    np.testing.assert_allclose(table.dice, 1.0)
    hard = nib.load(str(out / "group" / "space-MNI152NLin2009cAsym_seg-pavi3_dseg.nii.gz"))
    np.testing.assert_array_equal(np.asarray(hard.dataobj).reshape(-1), coarse)


def test_format_must_fit_the_space_and_posterior_must_exist(tmp_path: Path):
    vol = write_run(tmp_path / "vol", volume_posterior())
    with pytest.raises(BadInputError, match="GIFTI"):
        export_maps(vol, fmt="gifti")
    surf = write_run(tmp_path / "surf", surface_posterior(CORTEX % 3, 3, n_subjects=1))
    with pytest.raises(BadInputError, match="NIfTI"):
        export_maps(surf, fmt="nifti")
    with pytest.raises(BadInputError, match="pavi-parcel fit"):
        export_maps(tmp_path / "empty")
    with pytest.raises(BadInputError, match="fit the fsaverage5"):
        export_maps(surf, reference=str(_volume_atlas(tmp_path)))


def _volume_atlas(folder: Path) -> Path:
    path = folder / "atlas_dseg.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4)), str(path))
    return path


def test_non_distributions_are_rejected(tmp_path: Path):
    post = surface_posterior(CORTEX % 3, 3, n_subjects=1)
    post.group_probs = post.group_probs * 2
    with pytest.raises(BadInputError, match="not distributions"):
        export_maps(write_run(tmp_path / "out", post))


def test_atomic_writes_keep_the_previous_file_on_failure(surface_run):
    out, post, _ = surface_run
    target = out / "sub-01" / "anat" / "sub-01_hemi-L_space-fsaverage5_seg-pavi4_dseg.label.gii"
    before = target.read_bytes()
    broken = nib.gifti.GiftiImage()
    broken.add_gifti_data_array(nib.gifti.GiftiDataArray(np.zeros(3, dtype=np.int32)))
    broken.darrays[0].data = np.array([object(), None, 1], dtype=object)   # nibabel cannot encode this
    with pytest.raises(Exception):  # noqa: B017 - whatever nibabel raises, the old file must stay
        save_image(broken, target)
    assert target.read_bytes() == before
    sidecar = sidecar_path(target)
    text = sidecar.read_text()
    with pytest.raises(TypeError):
        write_json(sidecar, {"bad": object()})
    assert sidecar.read_text() == text
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    stale = target.with_name(".tmp-deadbeef-" + target.name)           # left by a killed export
    stale.write_bytes(b"partial")
    export_stage(out, ExportSettings(uncertainty="none", report=False))
    assert not stale.exists() and target.read_bytes() == before
