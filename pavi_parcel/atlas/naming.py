"""Network order, names and colours: a fixed default, or matched to a reference atlas.

Without a reference, output label ``i`` (1..K) is network ``i - 1`` of the posterior, named
``Network01``, ``Network02``, ... and coloured from :data:`PALETTE` (20 fixed colours, then a
golden-ratio hue sequence). The order is the posterior's own, so label ``i`` always refers
to ``group_probs[:, i - 1]`` of ``model/posterior.h5``.

With a reference (``yeo7``, ``yeo17`` or a user segmentation file read by
:func:`pavi_parcel.atlas.references.load_atlas`), the group hard map
(argmax of the group probabilities) is matched to the reference networks by the Hungarian
method (:func:`scipy.optimize.linear_sum_assignment`) maximising the summed Dice overlap.
Matched networks come first, in the reference's order, and take its names and colours;
networks left without a partner (K larger than the reference, or zero overlap) follow in
posterior order under generic names ``Network<label>``. The same permutation is applied
to every subject's map, so labels mean the same network across the cohort.

A fit with an atlas prior (``--prior``) needs no matching: its networks are the atlas's
networks, in atlas order, and take the atlas's names and colours (:func:`atlas_table`).

The chosen order is saved in ``seg-pavi<K>_dseg.tsv`` (column ``posterior_index``), which
:func:`read_label_table` reads back for the report.
"""

from __future__ import annotations

import colorsys
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.optimize import linear_sum_assignment

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.spaces import Space

from .references import load_atlas

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896",
           "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")
"""Default network colours, in label order (beyond 20: golden-ratio hues)."""


@dataclass(frozen=True)
class LabelTable:
    """How posterior networks become output labels.

    Attributes
    ----------
    order : ndarray of int, shape (K,)
        ``order[i]`` is the posterior network shown as label ``i + 1``.
    names : list of str
        Name of label ``i + 1`` at position ``i``.
    colors : ndarray of uint8, shape (K, 3)
        RGB colour of each label.
    reference : str or None
        The reference atlas the names came from, or None for the default table.
    dice : ndarray of float, shape (K,)
        Dice overlap of each label with its matched reference network (NaN when unmatched
        or without a reference).
    """

    order: np.ndarray
    names: list[str]
    colors: np.ndarray
    reference: str | None = None
    dice: np.ndarray | None = None

    @property
    def n_networks(self) -> int:
        return len(self.names)

    @property
    def hex_colors(self) -> list[str]:
        """Colours as ``#rrggbb`` strings."""
        return ["#{:02x}{:02x}{:02x}".format(*map(int, c)) for c in self.colors]

    def reorder(self, probs: np.ndarray) -> np.ndarray:
        """Put the last axis (posterior networks) in label order: ndarray of shape (..., K)."""
        return np.asarray(probs)[..., self.order]

    def label_map(self) -> dict[str, str]:
        """``{"1": name, ...}`` for JSON sidecars."""
        return {str(i + 1): name for i, name in enumerate(self.names)}


@dataclass(frozen=True)
class Reference:
    """A reference parcellation in the model's full space.

    Attributes
    ----------
    labels : ndarray of int, shape (n_total,)
        0 = unknown / medial wall, 1..R = reference networks.
    names : list of str
        Names of labels 1..R.
    colors : ndarray of uint8, shape (R, 3)
    spec : str
        What the user asked for (``yeo7``, ``yeo17`` or a path).
    """

    labels: np.ndarray
    names: list[str]
    colors: np.ndarray
    spec: str


# --------------------------------------------------------------------------- colours and tables
def default_colors(n: int) -> np.ndarray:
    """Fixed palette of ``n`` colours: ndarray of uint8, shape (n, 3)."""
    out = [_hex_to_rgb(h) for h in PALETTE[:n]]
    for i in range(len(out), n):
        hue = (i * 0.618033988749895) % 1.0
        out.append(tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, 0.65, 0.9)))
    return np.asarray(out, dtype=np.uint8).reshape(n, 3)


def default_table(n_networks: int) -> LabelTable:
    """Posterior order, names ``Network01``.., colours from :func:`default_colors`."""
    return LabelTable(order=np.arange(n_networks), names=[_generic_name(i + 1) for i in range(n_networks)],
                      colors=default_colors(n_networks), reference=None,
                      dice=np.full(n_networks, np.nan))


def match_to_reference(labels: np.ndarray, ref_labels: np.ndarray, n_networks: int,
                       ref_names: list[str], ref_colors: np.ndarray, spec: str = "reference") -> LabelTable:
    """Name networks after a reference parcellation by Hungarian matching on Dice overlap.

    Parameters
    ----------
    labels : ndarray of int, shape (n_vertices,)
        Group hard map, posterior network index 0..K-1 (negative = no data).
    ref_labels : ndarray of int, shape (n_vertices,)
        Reference labels on the same vertices, 0 = unknown, 1..R.
    n_networks : int
        K.
    ref_names : list of str
        Names of reference labels 1..R.
    ref_colors : ndarray of shape (R, 3)
        RGB colours, 0-255 (or 0-1 floats).
    spec : str
        Recorded in the table.

    Returns
    -------
    LabelTable
        Matched networks first, in reference order; unmatched ones after, in posterior order.
    """
    labels = np.asarray(labels, dtype=np.int64)
    ref_labels = np.asarray(ref_labels, dtype=np.int64)
    n_ref = len(ref_names)
    ref_colors = _as_uint8_colors(ref_colors)
    valid = (labels >= 0) & (labels < n_networks) & (ref_labels > 0) & (ref_labels <= n_ref)
    overlap = np.bincount(labels[valid] * n_ref + ref_labels[valid] - 1,
                          minlength=n_networks * n_ref).reshape(n_networks, n_ref).astype(np.float64)
    size_k = np.bincount(labels[(labels >= 0) & (labels < n_networks)], minlength=n_networks)[:, None]
    size_r = np.bincount(ref_labels[(ref_labels > 0) & (ref_labels <= n_ref)] - 1, minlength=n_ref)[None, :]
    denom = size_k + size_r
    dice = np.divide(2 * overlap, denom, out=np.zeros_like(overlap), where=denom > 0)

    rows, cols = linear_sum_assignment(dice, maximize=True)
    pairs = sorted((int(c), int(r)) for r, c in zip(rows, cols) if overlap[r, c] > 0)
    matched = [r for _, r in pairs]
    unmatched = [k for k in range(n_networks) if k not in set(matched)]
    order = np.asarray(matched + unmatched, dtype=np.int64)

    names = [ref_names[c] for c, _ in pairs]
    names += [_generic_name(len(pairs) + i + 1) for i in range(len(unmatched))]
    taken = {tuple(c) for c in ref_colors[[c for c, _ in pairs]].tolist()}
    spare = [c for c in default_colors(n_networks + n_ref).tolist() if tuple(c) not in taken]
    colors = np.vstack([ref_colors[[c for c, _ in pairs]].reshape(-1, 3),
                        np.asarray(spare[:len(unmatched)], dtype=np.uint8).reshape(-1, 3)]).astype(np.uint8)
    dice_out = np.array([dice[r, c] for c, r in pairs] + [np.nan] * len(unmatched))
    return LabelTable(order=order, names=_unique(names), colors=colors, reference=spec, dice=dice_out)


def atlas_table(labels: np.ndarray, ref_labels: np.ndarray, ref_names: list[str], ref_colors: np.ndarray,
                spec: str) -> LabelTable:
    """The table of a fit with an atlas prior: its networks ARE the atlas networks, in atlas order.

    No matching: label ``i`` is posterior network ``i - 1`` and takes the atlas's name and colour;
    ``dice`` records how far the fitted group map moved from the atlas.

    Parameters
    ----------
    labels : ndarray of int, shape (n_vertices,)
        Group hard map, posterior network index 0..K-1.
    ref_labels : ndarray of int, shape (n_vertices,)
        Atlas labels on the same vertices, 0 = unknown, 1..K.
    ref_names : list of str
        K names.
    ref_colors : ndarray of shape (K, 3)
    spec : str
        The atlas (``yeo7``, ``yeo17`` or a path), recorded in the table.
    """
    k = len(ref_names)
    labels, ref_labels = np.asarray(labels, dtype=np.int64), np.asarray(ref_labels, dtype=np.int64)
    dice = np.full(k, np.nan)
    for i in range(k):
        a, b = labels == i, ref_labels == i + 1
        if a.any() or b.any():
            dice[i] = 2.0 * np.sum(a & b) / (a.sum() + b.sum())
    return LabelTable(order=np.arange(k), names=_unique(list(ref_names)), colors=_as_uint8_colors(ref_colors),
                      reference=spec, dice=dice)


LABEL_COLUMNS = {
    "posterior_index": {"Description": "Index (from 0) of the network in model/posterior.h5"},
    "reference_dice": {"Description": "Dice overlap of the group atlas network with the reference network it was "
                                      "named after (n/a without a reference)"},
}


def write_label_table(path: Path, table: LabelTable) -> None:
    """Write ``seg-pavi<K>_dseg.tsv`` (index, name, color #rrggbb, posterior_index, reference_dice) and its JSON."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["index", "name", "color", "posterior_index", "reference_dice"])
        for i, (name, color) in enumerate(zip(table.names, table.hex_colors)):
            d = table.dice[i] if table.dice is not None else np.nan
            writer.writerow([i + 1, name, color, int(table.order[i]), "n/a" if np.isnan(d) else f"{d:.4f}"])
    with atomic_write(path.with_suffix(".json")) as tmp:  # the columns BIDS does not define (lookup tables)
        tmp.write_text(json.dumps(LABEL_COLUMNS, indent=2) + "\n")


def read_label_table(path: Path) -> LabelTable:
    """Read a table written by :func:`write_label_table` (``posterior_index`` optional)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    rows.sort(key=lambda r: int(r["index"]))
    order = [int(r.get("posterior_index") or int(r["index"]) - 1) for r in rows]
    dice = [float(r["reference_dice"]) if r.get("reference_dice") not in (None, "", "n/a") else np.nan
            for r in rows]
    return LabelTable(order=np.asarray(order, dtype=np.int64), names=[r["name"] for r in rows],
                      colors=np.asarray([_hex_to_rgb(r["color"]) for r in rows], dtype=np.uint8).reshape(-1, 3),
                      reference=None, dice=np.asarray(dice))


# --------------------------------------------------------------------------- references
def load_reference(spec: str, space: Space) -> Reference:
    """Load a reference parcellation into the model's full space.

    Parameters
    ----------
    spec : str
        ``yeo7`` / ``yeo17``, the ``hemi-L`` file of a GIFTI ``.label.gii`` pair (a denser nested
        fsaverage mesh is reduced to the model's), or a NIfTI ``dseg`` for volume spaces (read by
        :func:`pavi_parcel.atlas.references.load_atlas`; a volume on another grid is resampled to
        the model grid by nearest neighbour).
    space : Space
        The model's space.

    Raises
    ------
    BadInputError
        A surface reference for a volume model or the reverse, or a missing/unreadable file.
    """
    atlas = load_atlas(spec, space if space.is_surface else None)
    atlas_is_volume = atlas.grid_shape is not None
    if atlas_is_volume == space.is_surface:
        kind = "a NIfTI dseg on the model grid" if not space.is_surface else \
            "yeo7, yeo17, a .label.gii pair (fsaverage) or a .dlabel.nii (fsLR)"
        raise BadInputError(f"Reference '{spec}' does not fit the {space.name} space of the model", kind,
                            "a volume atlas" if atlas_is_volume else "a surface atlas",
                            "pass a reference in the model's space as export.reference")
    labels = np.asarray(atlas.labels, dtype=np.int64)
    if atlas_is_volume:
        labels = _on_grid(labels, atlas.grid_shape, atlas.affine, space)
    elif labels.shape[0] != space.n_total:
        raise BadInputError(f"Reference '{spec}' has the wrong number of vertices", f"{space.n_total}",
                            f"{labels.shape[0]}", f"resample the atlas to {space.name}")
    return Reference(labels, list(atlas.names), _as_uint8_colors(atlas.colors), str(spec))


def table_for(group_labels: np.ndarray, vertex_index: np.ndarray, n_networks: int,
              reference: Reference | None) -> LabelTable:
    """Default table, or one matched to ``reference`` on the modelled vertices."""
    if reference is None:
        return default_table(n_networks)
    ref = reference.labels[np.asarray(vertex_index)]
    return match_to_reference(group_labels, ref, n_networks, reference.names, reference.colors,
                              reference.spec)


def _on_grid(labels: np.ndarray, grid_shape: tuple[int, ...], affine: np.ndarray, space: Space) -> np.ndarray:
    """Flat C-order labels of a volume atlas, resampled (nearest) onto the model grid if needed."""
    if tuple(grid_shape) == tuple(space.grid_shape) and np.allclose(affine, space.affine, atol=1e-4):
        return labels
    from nilearn.image import resample_img
    img = nib.Nifti1Image(labels.reshape(tuple(grid_shape), order="C").astype(np.int32), np.asarray(affine))
    out = resample_img(img, target_affine=np.asarray(space.affine), target_shape=tuple(space.grid_shape),
                       interpolation="nearest", force_resample=True, copy_header=True)
    return np.rint(np.asarray(out.dataobj)).astype(np.int64).reshape(-1, order="C")


def _generic_name(label: int) -> str:
    return f"Network{label:02d}"


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _hex_to_rgb(value: str) -> tuple[int, int, int]:
    value = value.strip().lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _as_uint8_colors(colors: np.ndarray) -> np.ndarray:
    colors = np.asarray(colors)[..., :3]
    if colors.size and np.issubdtype(colors.dtype, np.floating) and colors.max() <= 1.0:
        colors = colors * 255.0
    return np.clip(np.rint(colors), 0, 255).astype(np.uint8).reshape(-1, 3)
