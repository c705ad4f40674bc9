"""Meshes: icospheres, the three spellings of a mesh folder, where fsaverage meshes are looked for."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial import ConvexHull

from pavi_parcel.simulate.geometry import write_mesh
from pavi_parcel.spaces import FsaverageSpace
from pavi_parcel.spaces.icosphere import icosphere, subdivide
from pavi_parcel.spaces.meshes import MeshUnavailable, find_fsaverage_mesh, fsaverage_folders, mesh_in_folder

N = 162   # an order-2 icosphere


@pytest.fixture
def sphere():
    coords = icosphere(2).astype(np.float32) * 100
    return coords, ConvexHull(coords).simplices.astype(np.int32)


def test_icospheres_nest_and_lie_on_the_unit_sphere():
    for order in range(4):
        points = icosphere(order)
        assert points.shape == (10 * 4 ** order + 2, 3)
        assert np.allclose(np.linalg.norm(points, axis=1), 1.0)
        if order:
            assert np.allclose(points[:len(icosphere(order - 1))], icosphere(order - 1))


def test_subdivision_keeps_old_vertices_and_puts_each_new_one_on_its_edge(sphere):
    coords, faces = sphere
    new, new_faces, edges = subdivide(coords, faces)
    assert new.shape == (N + edges.shape[0], 3) and new_faces.shape == (4 * faces.shape[0], 3)
    assert np.array_equal(new[:N], coords) and np.allclose(new[N:], coords[edges].mean(axis=1))
    assert edges.shape[0] == 3 * faces.shape[0] // 2             # a closed triangle mesh: E = 3F / 2
    assert np.unique(new_faces).size == new.shape[0]


def _gifti(path, coords, faces, gz=False):
    img = nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(coords, intent="NIFTI_INTENT_POINTSET"),
                                        nib.gifti.GiftiDataArray(faces, intent="NIFTI_INTENT_TRIANGLE")])
    if gz:
        path.write_bytes(gzip.compress(img.to_bytes()))
    else:
        nib.save(img, str(path))


def _write_spelling(folder, spelling, coords, faces):
    folder.mkdir(parents=True)
    sulc = np.linspace(-1, 1, N, dtype=np.float32)
    for hemi, fs, nl in (("L", "lh", "left"), ("R", "rh", "right")):
        if spelling == "freesurfer":
            (folder / "surf").mkdir(exist_ok=True)
            nib.freesurfer.write_geometry(str(folder / "surf" / f"{fs}.pial"), coords, faces)
            nib.freesurfer.write_geometry(str(folder / "surf" / f"{fs}.inflated"), coords * 1.1, faces)
            nib.freesurfer.write_morph_data(str(folder / "surf" / f"{fs}.sulc"), sulc)
        elif spelling == "nilearn":
            _gifti(folder / f"pial_{nl}.gii.gz", coords, faces, gz=True)
            _gifti(folder / f"infl_{nl}.gii.gz", coords * 1.1, faces, gz=True)
            nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(sulc)]), str(folder / f"sulc_{nl}.gii"))
        else:
            _gifti(folder / f"tpl-fsaverage_hemi-{hemi}_den-162_pial.surf.gii", coords, faces)
            _gifti(folder / f"tpl-fsaverage_hemi-{hemi}_den-162_inflated.surf.gii", coords * 1.1, faces)
            nib.save(nib.gifti.GiftiImage(darrays=[nib.gifti.GiftiDataArray(sulc)]),
                     str(folder / f"tpl-fsaverage_hemi-{hemi}_den-162_sulc.shape.gii"))


@pytest.mark.parametrize("spelling", ["freesurfer", "nilearn", "templateflow"])
def test_a_mesh_folder_in_any_of_three_spellings(spelling, sphere, tmp_path):
    coords, faces = sphere
    _write_spelling(tmp_path / "mesh", spelling, coords, faces)
    found = mesh_in_folder(tmp_path / "mesh", N)
    assert found is not None and {k for k, _ in found.surfaces} == {"pial", "inflated"}
    pial = found.surface("L", "pial")
    assert np.allclose(pial.coordinates, coords, atol=1e-4) and np.array_equal(pial.faces, faces)
    assert np.allclose(found.surface("R", "inflated").coordinates, coords * 1.1, atol=1e-4)
    assert np.allclose(found.sulcal_depth("L", N), np.linspace(-1, 1, N))
    assert mesh_in_folder(tmp_path / "mesh", 642) is None       # the vertex count decides, not the name


def test_fsaverage6_mesh_from_mesh_dir_or_a_note(tmp_path, monkeypatch):
    for variable in ("SUBJECTS_DIR", "NILEARN_DATA"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(tmp_path / "tf"))
    find_fsaverage_mesh.cache_clear()
    bare = FsaverageSpace("fsaverage6")
    assert [str(p) for p in fsaverage_folders("fsaverage6", None)] == [
        str(tmp_path / "home" / "nilearn_data" / "fsaverage6"), str(tmp_path / "tf" / "tpl-fsaverage")]
    assert bare.mesh_files() is None and "No fsaverage6 mesh found" in bare.mesh_note()
    assert "data.mesh_dir" in bare.mesh_note()
    with pytest.raises(MeshUnavailable, match="40,962-vertex surfaces"):
        bare.edges()

    given = FsaverageSpace("fsaverage6", mesh_dir=write_mesh(tmp_path / "mesh"))
    assert given.mesh_note() is None
    edges = given.edges()
    assert edges.max() == 2 * 40962 - 1 and np.bincount(edges.ravel()).min() >= 5 * 2
    # the simulator's fsaverage6 nests fsaverage5 as the real one does: the first 10,242 vertices agree
    five = FsaverageSpace("fsaverage5").sphere()["left"]
    assert np.allclose(given.sphere()["left"][:10242], five, atol=1e-3)

    subjects = tmp_path / "subjects"
    write_mesh(subjects / "fsaverage6")
    monkeypatch.setenv("SUBJECTS_DIR", str(subjects))
    find_fsaverage_mesh.cache_clear()
    assert FsaverageSpace("fsaverage6").mesh_files().where == str(subjects / "fsaverage6")
    find_fsaverage_mesh.cache_clear()
