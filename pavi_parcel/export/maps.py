"""Export a fitted posterior as a BIDS-derivatives dataset of maps.

Files written (``<K>`` = number of networks, ``<vol>`` = volume template)::

    OUT_DIR/dataset_description.json      DatasetType "derivative", GeneratedBy, SourceDatasets
    OUT_DIR/.bidsignore                   what BIDS has no rule for: work/, model/, group/, qc/, the report,
                                          entropy maps and (surfaces) soft maps
    OUT_DIR/README.md                     the layout, conventions and validator warnings (:mod:`.readme`)
    OUT_DIR/seg-pavi<K>_dseg.tsv          index, name, color (#rrggbb), posterior_index, reference_dice
                                          (and its .json: the columns BIDS does not define)
    OUT_DIR/sub-<label>/anat/             one set of maps per subject (training subjects, and the new
                                          subjects of ``pavi-parcel apply`` from model/applied/):
      surface (fsaverage meshes, GIFTI), for hemi-L and hemi-R:
        sub-<label>_hemi-L_space-<mesh>_seg-pavi<K>_probseg.func.gii        soft map
        sub-<label>_hemi-L_space-<mesh>_seg-pavi<K>_dseg.label.gii          hard map
        sub-<label>_hemi-L_space-<mesh>_seg-pavi<K>_stat-entropy_statmap.func.gii   uncertainty
      fsLR (CIFTI-2, the 59,412 cortical grayordinates of the 91k set):
        sub-<label>_space-fsLR_seg-pavi<K>_den-91k_probseg.dscalar.nii        one map per network
        sub-<label>_space-fsLR_seg-pavi<K>_den-91k_dseg.dlabel.nii            hard map, label table inside
        sub-<label>_space-fsLR_seg-pavi<K>_den-91k_stat-entropy_statmap.dscalar.nii   uncertainty
      volume:
        sub-<label>_space-<vol>_seg-pavi<K>_probseg.nii.gz                     4-D soft map
        sub-<label>_space-<vol>_seg-pavi<K>_dseg.nii.gz                        hard map
        sub-<label>_space-<vol>_seg-pavi<K>_stat-entropy_statmap.nii.gz        uncertainty
      each with a JSON sidecar (same name, ``.json``): settings, sources, LabelMap, SpatialReference
    OUT_DIR/group/hemi-L_space-<mesh>_seg-pavi<K>_probseg.func.gii ...   group atlas, same names without sub-
                                          (in a folder of its own: BIDS would let root-level sidecars be
                                          inherited by every subject's maps)

The files of each space and their format are the space's (:meth:`pavi_parcel.spaces.Space.map_paths`,
:meth:`~pavi_parcel.spaces.Space.write_map`).

Soft maps (``probseg``) hold K data arrays (GIFTI), maps (CIFTI, each named after its network)
or volumes (4-D NIfTI) in label order: map ``i`` (0-based) is the probability of label ``i + 1``;
probabilities sum to 1 on the modelled vertices and are 0 in every network on the medial wall
(outside the mask).
BIDS has no probabilistic surface segmentation yet; this ``.func.gii`` layout mirrors the
4-D NIfTI ``probseg`` convention, one data array per label.

Uncertainty maps use the statistical-map convention (``stat-<label>_statmap``, BIDS
Extension Proposal 41): ``stat-entropy`` is the posterior entropy divided by log K, in
[0, 1] (0 = certain, 1 = uniform over networks); 0 outside the model.

Label order and names: see :mod:`pavi_parcel.atlas.naming`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pavi_parcel import __version__
from pavi_parcel.atlas.naming import LabelTable, load_reference, table_for, write_label_table
from pavi_parcel.atlas.priors import prior_label_table
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import TMP_MARK
from pavi_parcel.io.files import write_json, write_text
from pavi_parcel.io.layout import (
    applied_label,
    applied_paths,
    bare_label,
    config_path,
    group_maps_folder,
    label_table_path,
    subject_maps_folder,
)
from pavi_parcel.settings.compose import saved_settings
from pavi_parcel.stores.posterior import Posterior, fitted_posterior, read_posterior, read_subject_probs

from .readme import derivative_readme
from .writers import hard_labels, normalized_entropy, to_full_space

CODE_URL = "https://github.com/pavi-parcel/pavi-parcel"
UNCERTAINTY_KINDS = ("entropy", "none")
BIDSIGNORE = """\
# Not part of the BIDS derivative: stores, model state, the group atlas, QC tables, report, logs.
/work
/model
/group
/qc
/report.html
/logs
/.hydra
/multirun
.tmp-*
# Maps BIDS has no file rule for, kept in the convention README.md documents: the uncertainty
# maps, and (on surfaces) the soft maps.
*_statmap.*
# Connectivity outputs named as XCP-D names them (BIDS has no rule for them yet, BEP017).
*_relmat.tsv
*_relmat.json
*_timeseries.tsv
*_timeseries.json
# The parent table of a nested scale (which coarse network each network belongs to).
*_parents-pavi*
"""
SURFACE_BIDSIGNORE = "*_probseg.func.gii\n*_probseg.dscalar.nii\n*_probseg.json\n"


def sidecar_path(path: Path) -> Path:
    """JSON sidecar of a map: every extension replaced by ``.json``."""
    name = path.name
    return path.with_name(name[:name.index(".")] + ".json")


def export_maps(out_dir: Path, fmt: str | None = None, reference: str | None = None,
                uncertainty: str = "entropy") -> list[Path]:
    """Write every subject's maps and the group atlas as a BIDS-derivatives dataset.

    Parameters
    ----------
    out_dir : Path
        The run's output folder, holding ``model/posterior.h5``.
    fmt : {"gifti", "cifti", "nifti", "auto"} or None
        Output format; None/auto follows the space (GIFTI on fsaverage, CIFTI on fsLR, NIfTI on volumes).
    reference : str or None
        ``yeo7``, ``yeo17`` or a path to a reference parcellation that names and colours the
        networks (Hungarian matching on Dice overlap); None keeps the posterior's order and
        generic names, or, for a fit with an atlas prior, the atlas's order, names and colours.
    uncertainty : {"entropy", "none"}
        Uncertainty map to write.

    Returns
    -------
    list of Path
        Every file written, in writing order.

    Raises
    ------
    BadInputError
        Missing posterior, a format that does not fit the space, an unusable reference.
    """
    out_dir = Path(out_dir)
    source = fitted_posterior(out_dir)
    if uncertainty not in UNCERTAINTY_KINDS:
        raise BadInputError("Unknown uncertainty map", " or ".join(UNCERTAINTY_KINDS), f"'{uncertainty}'",
                            "set export.uncertainty=entropy")
    post = read_posterior(source, subjects=False)
    _check_format(fmt, post)
    group = _normalized(post.group_probs, "group atlas")
    ref = load_reference(reference, post.space) if reference else None
    table = None if ref is not None else prior_label_table(post, np.argmax(group, axis=1))  # fitted with --prior
    table = table or table_for(np.argmax(group, axis=1), post.vertex_index, post.n_networks, ref)
    _remove_stale(out_dir, post.subjects + [applied_label(p) for p in applied_paths(out_dir)])
    base = _provenance(out_dir, post, table)

    description = dataset_description(out_dir, post)
    origin = (description.get("SourceDatasets") or [{}])[0].get("URL", "its BIDS dataset")
    written = [write_json(out_dir / "dataset_description.json", description),
               write_text(out_dir / ".bidsignore", BIDSIGNORE + (SURFACE_BIDSIGNORE if post.space.is_surface else "")),
               write_text(out_dir / "README.md", derivative_readme(post.space, post.n_networks, __version__, origin))]
    tsv = label_table_path(out_dir, post.n_networks)
    write_label_table(tsv, table)
    written += [tsv, tsv.with_suffix(".json")]
    written += write_map_set(group_maps_folder(out_dir), "", group, post, table, uncertainty,
                             {**base, "Subject": "group"})
    for s, label in enumerate(tqdm(post.subjects, desc="export", unit="subject")):
        probs = _normalized(read_subject_probs(source, s), f"subject {label}")
        written += write_map_set(subject_maps_folder(out_dir, label), f"sub-{bare_label(label)}_", probs, post,
                                 table, uncertainty, {**base, "Subject": bare_label(label)})
    return written + export_applied(out_dir, post, table, fmt, uncertainty)


def export_applied(out_dir: Path, post: Posterior, table: LabelTable, fmt: str | None, uncertainty: str,
                   labels: list[str] | None = None) -> list[Path]:
    """Maps of the subjects added by ``pavi-parcel apply``, named and labelled as a training subject's.

    Parameters
    ----------
    out_dir : Path
    post : Posterior
        The training posterior (space, vertices, K); its subjects take precedence.
    table : LabelTable
        The run's label table.
    fmt : str or None
    uncertainty : str
    labels : list of str, optional
        Only these applied subjects (default: every ``model/applied/sub-*_posterior.h5``).

    Returns
    -------
    list of Path
    """
    out_dir = Path(out_dir)
    paths = [p for p in applied_paths(out_dir) if applied_label(p) not in post.subjects
             and (labels is None or applied_label(p) in labels)]
    if not paths:
        return []
    _check_format(fmt, post)
    base = _provenance(out_dir, post, table)
    written: list[Path] = []
    for path in tqdm(paths, desc="export new subjects", unit="subject"):
        applied, label = read_posterior(path), applied_label(path)
        if not np.array_equal(applied.vertex_index, post.vertex_index) or applied.n_networks != post.n_networks:
            raise BadInputError(f"{path} does not match model/posterior.h5", "the fitted vertices and networks",
                                f"{len(applied.vertex_index)} vertices, K = {applied.n_networks}",
                                f"apply the model to participant {label} again (pavi-parcel apply)")
        probs = _normalized(applied.subject_probs[0], f"subject {label}")
        source = f"model/applied/{path.name}"
        written += write_map_set(subject_maps_folder(out_dir, label), f"sub-{label}_", probs, post, table,
                                 uncertainty, {**base, "Subject": label, "Sources": [f"bids::{source}"],
                                               "SourcePosterior": source, "Applied": True})
    return written


def write_map_set(folder: Path, prefix: str, probs: np.ndarray, post: Posterior, table: LabelTable,
                  uncertainty: str, provenance: dict[str, Any]) -> list[Path]:
    """Write the soft, hard and uncertainty maps (and sidecars) of one subject or the group.

    Parameters
    ----------
    folder : Path
    prefix : str
        ``"sub-<label>_"`` or ``""``.
    probs : ndarray of shape (n_vertices, K)
        Posterior order; rows sum to 1.
    post : Posterior
        Gives the space, vertex index and K.
    table : LabelTable
    uncertainty : str
    provenance : dict
        Shared sidecar fields.
    """
    space = post.space
    ordered = table.reorder(probs).astype(np.float32)
    full = {"probseg": to_full_space(ordered, post.vertex_index, space.n_total, 0.0),
            "dseg": to_full_space(hard_labels(ordered), post.vertex_index, space.n_total, 0),
            "entropy": to_full_space(normalized_entropy(ordered), post.vertex_index, space.n_total, 0.0)}
    paths = space.map_paths(folder, prefix, f"seg-pavi{post.n_networks}")
    label_map = table.label_map()
    meta = {
        "probseg": {**provenance, "Description": "Posterior probability of each network; map i (GIFTI data "
                    "array, CIFTI map, NIfTI volume), counted from 0, holds label i + 1; 0 everywhere outside "
                    "the model.",
                    "LabelMap": label_map},
        "dseg": {**provenance, "Description": "Most probable network (argmax of the posterior); "
                 "0 = medial wall / outside the model.", "LabelMap": label_map},
        "entropy": {**provenance, "Description": "Posterior entropy divided by log K, in [0, 1]: 0 = certain, "
                    "1 = uniform over the networks; 0 outside the model.", "Statistic": "entropy",
                    "Units": "normalized (0-1)"},
    }
    kinds = ("probseg", "dseg", "entropy") if uncertainty == "entropy" else ("probseg", "dseg")
    written: list[Path] = []
    for kind in kinds:
        for path in space.write_map(kind, full[kind], paths[kind], table.names, table.colors):
            hemi = space.hemisphere_of(path)
            extra = {**({"Hemisphere": hemi} if hemi else {}), **space.map_fields(hemi)}
            written += [path, write_json(sidecar_path(path), {**meta[kind], **extra})]
    return written


def dataset_description(out_dir: Path, post: Posterior) -> dict[str, Any]:
    """Contents of ``dataset_description.json`` (BIDS derivative)."""
    run = saved_settings(out_dir)
    settings = post.attrs.get("settings") if isinstance(post.attrs.get("settings"), dict) else {}
    bids_dir = run.bids_dir if run is not None else settings.get("bids_dir")
    desc: dict[str, Any] = {
        "Name": "pavi-parcel individual probabilistic functional parcellations",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "pavi-parcel", "Version": __version__, "CodeURL": CODE_URL}],
    }
    if bids_dir and str(bids_dir) != "???":
        desc["SourceDatasets"] = [{"URL": Path(str(bids_dir)).expanduser().resolve().as_uri()}]
    return desc


def _provenance(out_dir: Path, post: Posterior, table: LabelTable) -> dict[str, Any]:
    run = saved_settings(out_dir)
    settings = post.attrs.get("settings") if isinstance(post.attrs.get("settings"), dict) else {}
    cfg_path = config_path(out_dir)
    if post.attrs.get("config_hash"):
        config_hash = str(post.attrs["config_hash"])
    elif cfg_path.exists():
        config_hash = hashlib.sha256(cfg_path.read_bytes()).hexdigest()[:16]
    else:
        config_hash = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    seed = post.attrs.get("seed", settings.get("seed", None if run is None else run.seed))
    return {
        "Method": str(post.attrs.get("method", settings.get("method", "unknown"))),
        "NumberOfNetworks": post.n_networks,
        "Seed": seed,
        "ConfigHash": config_hash,
        "Sources": ["bids::model/posterior.h5"],
        "SourcePosterior": "model/posterior.h5",
        "Space": post.space.name,
        "Reference": table.reference,
        "SoftwareVersion": __version__,
    }


def _check_format(fmt: str | None, post: Posterior) -> None:
    """The requested format must be the space's own; the posterior must fit its space."""
    space = post.space
    formats = ("gifti", "cifti", "nifti")
    if fmt not in (None, "auto", *formats):
        raise BadInputError("Unknown export format", "gifti, cifti, nifti or auto", f"'{fmt}'",
                            "set export.format=auto")
    if fmt not in (None, "auto") and fmt != space.map_format:
        raise BadInputError(f"Cannot write {fmt.upper().replace('NIFTI', 'NIfTI')} maps "
                            f"for the {space.name} space", f"export.format={space.map_format} (or auto)",
                            f"export.format={fmt}", f"set export.format={space.map_format} or auto")
    n, k = post.group_probs.shape
    idx = np.asarray(post.vertex_index)
    if len(idx) != n or k < 2 or (idx.size and (idx.min() < 0 or idx.max() >= space.n_total)):
        raise BadInputError("Inconsistent posterior file", f"{n} vertex indices within 0..{space.n_total - 1} "
                            "and at least 2 networks", f"{len(idx)} indices, K = {k}",
                            "rerun `pavi-parcel fit` to rebuild model/posterior.h5")


def _normalized(probs: np.ndarray, what: str) -> np.ndarray:
    """Clip tiny negatives and renormalise rows; reject rows far from a distribution."""
    probs = np.asarray(probs, dtype=np.float64)
    sums = probs.sum(axis=1)
    if not np.all(np.isfinite(probs)) or probs.min(initial=0.0) < -1e-4 or np.abs(sums - 1).max(initial=0.0) > 1e-2:
        raise BadInputError(f"Posterior probabilities of the {what} are not distributions",
                            "finite, non-negative rows summing to 1", "other values",
                            "rerun `pavi-parcel fit` to rebuild model/posterior.h5")
    probs = np.clip(probs, 0.0, None)
    return probs / probs.sum(axis=1, keepdims=True)


def _remove_stale(out_dir: Path, subjects: list[str]) -> None:
    """Delete temporary files a killed export left next to its maps."""
    folders = [out_dir, group_maps_folder(out_dir)] + [subject_maps_folder(out_dir, s) for s in subjects]
    for folder in folders:
        if folder.is_dir():
            for stale in folder.glob(f"{TMP_MARK}*"):
                if stale.is_file():
                    stale.unlink(missing_ok=True)


