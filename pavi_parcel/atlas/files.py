"""Atlas files for :mod:`pavi_parcel.atlas.priors`: hard segmentations through
:func:`pavi_parcel.atlas.references.load_atlas`, and probabilistic ones (probseg) read here.

A probseg is a GIFTI ``.func.gii`` pair (given by its ``hemi-L`` file; one data array per
network; a denser fsaverage mesh is reduced to the model's by keeping the first vertices of
each hemisphere), a CIFTI ``.dscalar.nii`` on fsLR 32k (one map per network) or a 4-D NIfTI
(one volume per network; resampled linearly onto the model grid when needed). Names come from
the JSON sidecar's ``LabelMap``, a BIDS label table beside the file (same stem, ``_dseg`` for
``_probseg``, or ``seg-<label>_dseg.tsv``), or the GIFTI arrays' / CIFTI maps' names; colours
from the label table, else a default palette.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.spaces import FSAVERAGE_VERTICES, FslrSpace, Space

from .naming import load_reference
from .references import default_colors, hemisphere_pair, load_atlas, read_cifti_surface, read_label_tsv


@dataclass(frozen=True)
class FullAtlas:
    """An atlas in the model's full space, before restriction to the modelled vertices.

    Attributes
    ----------
    values : ndarray
        Labels 0..K of shape (n_total,) for a dseg; probabilities of shape (n_total, K) for a probseg.
    names : list of str
    colors : ndarray of uint8, shape (K, 3)
    kind : {"dseg", "probseg"}
    """

    values: np.ndarray
    names: list[str]
    colors: np.ndarray
    kind: str


def read_full_atlas(spec: str | Path, space: Space) -> FullAtlas:
    """An atlas (dseg or probseg) on the full space ``space``."""
    path = probseg_path(spec)
    if path is None:
        ref = load_reference(str(spec), space)
        return FullAtlas(ref.labels, list(ref.names), ref.colors, "dseg")
    if path.name.lower().endswith(".dscalar.nii"):
        values = read_cifti_surface(path, FslrSpace())[1].astype(np.float64)
        if not isinstance(space, FslrSpace):
            raise _space_error(spec, space, volume_atlas=False)
    elif path.name.lower().endswith(".gii"):
        if not space.is_surface:
            raise _space_error(spec, space, volume_atlas=False)
        values = _read_gifti_probseg(path, space)
        if values.shape[0] != space.n_total:
            raise BadInputError(f"Atlas prior {spec} has the wrong number of vertices", str(space.n_total),
                                str(values.shape[0]), "resample the atlas to the space of the runs")
    else:
        if space.is_surface:
            raise _space_error(spec, space, volume_atlas=True)
        values = _read_nifti_probseg(path, space)
    names = probseg_names(path, values.shape[1])
    colors = _probseg_colors(path, len(names))
    return FullAtlas(values, names, default_colors(len(names)) if colors is None else colors, "probseg")


def _space_error(spec, space, volume_atlas: bool) -> BadInputError:
    return BadInputError(f"Atlas prior {spec} does not fit the {space.name} space of the model",
                         "a volume atlas (.nii/.nii.gz)" if not space.is_surface else f"an atlas on {space.name}",
                         "a volume atlas" if volume_atlas else "a surface atlas on another mesh",
                         "pass an atlas in the space of the runs")


def probseg_path(spec: str | Path) -> Path | None:
    """The file of a probabilistic atlas, or None for a name or a hard segmentation."""
    text = str(spec)
    if re.fullmatch(r"yeo\d+", text.strip().lower()):
        return None
    path = Path(text).expanduser()
    name = path.name.lower()
    if not path.is_file():
        return None  # load_atlas reports the missing file
    if name.endswith((".func.gii", ".dscalar.nii")):
        return path
    if name.endswith(".dlabel.nii"):
        return None
    if name.endswith((".nii", ".nii.gz")):
        try:
            shape = nib.load(str(path)).shape
        except Exception:  # unreadable: load_atlas reports it
            return None
        return path if len(shape) == 4 and shape[3] > 1 else None
    return None


def probseg_count(path: Path) -> int:
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise _unreadable(path, exc) from exc
    if path.name.lower().endswith(".gii"):
        return len(img.darrays)
    return int(img.shape[0]) if path.name.lower().endswith(".dscalar.nii") else int(img.shape[3])


def _read_gifti_probseg(left: Path, space: Space | None) -> np.ndarray:
    """(n_total, K) probabilities of a ``.func.gii`` pair, on ``space`` (denser nested meshes reduced) or its own."""
    left, right = hemisphere_pair(left, "…_hemi-L_…probseg.func.gii")
    parts = []
    for path in (left, right):
        try:
            arrays = [np.asarray(d.data, dtype=np.float64).ravel() for d in nib.load(str(path)).darrays]
        except Exception as exc:
            raise _unreadable(path, exc) from exc
        sizes = {a.size for a in arrays}
        if len(arrays) < 2 or len(sizes) != 1 or sizes.pop() not in FSAVERAGE_VERTICES.values():
            raise BadInputError(f"Surface atlas {path} is not a probabilistic segmentation on fsaverage",
                                "at least 2 data arrays of 10,242 (fsaverage5), 40,962 or 163,842 vertices",
                                f"{len(arrays)} arrays of sizes {sorted({a.size for a in arrays})}",
                                "resample the atlas to the fsaverage mesh of the runs, one data array per network")
        parts.append(np.stack(arrays, axis=1))
    if parts[0].shape[1] != parts[1].shape[1]:
        raise BadInputError(f"Hemispheres of {left} disagree", "the same networks in both files",
                            f"{parts[0].shape[1]} and {parts[1].shape[1]} arrays", "check the atlas files")
    if space is None:
        return np.concatenate(parts, axis=0)
    return space.from_nested(parts, str(left))


def _read_nifti_probseg(path: Path, space) -> np.ndarray:
    """(n_total, K) probabilities of a 4-D NIfTI on the model grid (resampled linearly if needed)."""
    try:
        img = nib.load(str(path))
        if tuple(img.shape[:3]) != tuple(space.grid_shape) or not np.allclose(img.affine, space.affine, atol=1e-4):
            from nilearn.image import resample_img

            img = resample_img(img, target_affine=np.asarray(space.affine), target_shape=tuple(space.grid_shape),
                               interpolation="linear", force_resample=True, copy_header=True)
        data = np.asarray(img.dataobj, dtype=np.float64)
    except BadInputError:
        raise
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    return data.reshape(-1, data.shape[3], order="C")


def probseg_names(path: Path, k: int) -> list[str]:
    """Names of a probseg's networks: sidecar LabelMap, a label table, GIFTI array names, or NetworkNN."""
    names = None
    sidecar = path.with_name(path.name[:path.name.index(".")] + ".json")
    if sidecar.is_file():
        try:
            label_map = json.loads(sidecar.read_text()).get("LabelMap") or {}
            names = [str(label_map[str(i + 1)]) for i in range(k)] if label_map else None
        except (ValueError, KeyError, AttributeError):
            names = None
    table = _table_beside(path)
    if names is None and table is not None:
        rows = read_label_tsv(table)
        keys = sorted(i for i in rows if i > 0)
        names = [rows[i][0] for i in keys] if len(keys) == k else None
    if names is None and path.name.lower().endswith(".dscalar.nii"):
        axis = nib.load(str(path)).header.get_axis(0)
        names = [str(n) for n in axis.name] if len(axis.name) == k else None
    if names is None and path.name.lower().endswith(".gii"):
        meta = [d.meta.get("Name") if d.meta is not None else None for d in nib.load(str(path)).darrays]
        names = [str(m) for m in meta] if all(meta) and len(meta) == k else None
    return names or [f"Network{i + 1:02d}" for i in range(k)]


def _probseg_colors(path: Path, k: int) -> np.ndarray | None:
    table = _table_beside(path)
    if table is None:
        return None
    rows = read_label_tsv(table)
    keys = sorted(i for i in rows if i > 0)
    if len(keys) != k or any(rows[i][1] is None for i in keys):
        return None
    return np.asarray([rows[i][1] for i in keys], dtype=np.uint8).reshape(k, 3)


def _table_beside(path: Path) -> Path | None:
    """A BIDS label table next to a probseg: same stem, ``_dseg`` for ``_probseg``, or ``seg-X_dseg.tsv``."""
    stem = path.name[:path.name.index(".")]
    nohemi = re.sub(r"_?hemi-[LR]", "", stem).lstrip("_")
    candidates = [stem + ".tsv", nohemi + ".tsv", re.sub(r"probseg$", "dseg", stem) + ".tsv",
                  re.sub(r"probseg$", "dseg", nohemi) + ".tsv"]
    seg = re.search(r"seg-[A-Za-z0-9]+", stem)
    if seg:
        candidates.append(f"{seg.group(0)}_dseg.tsv")
    return next((path.with_name(c) for c in candidates if path.with_name(c).is_file()), None)


def describe_atlas(spec: str | Path, space: Space | None = None) -> tuple[int, bool, int]:
    """(K, is_surface, n_total) of an atlas, read on a surface ``space`` (reduced to its mesh) or its own.

    Raises
    ------
    BadInputError
        An unreadable atlas, or a surface atlas on a mesh coarser than ``space``.
    """
    surface_space = space if space is not None and space.is_surface else None
    path = probseg_path(spec)
    if path is None:
        atlas = load_atlas(spec, surface_space)
        return atlas.n_networks, atlas.grid_shape is None, atlas.n_total
    if path.name.lower().endswith(".dscalar.nii"):
        values = read_cifti_surface(path, FslrSpace())[1]
        return len(probseg_names(path, values.shape[1])), True, int(values.shape[0])
    if path.name.lower().endswith(".gii"):
        values = _read_gifti_probseg(path, surface_space)
        return len(probseg_names(path, values.shape[1])), True, int(values.shape[0])
    k = probseg_count(path)
    return len(probseg_names(path, k)), False, int(np.prod(nib.load(str(path)).shape[:3]))


def _unreadable(path: Path, exc: Exception) -> BadInputError:
    return BadInputError(f"Cannot read atlas {path}", "a GIFTI or NIfTI segmentation",
                         f"an unreadable file ({exc.__class__.__name__})", "check the file")
