"""Several scales in one command (``--n-networks 7 17``): one ingest, one fingerprint store, one fit per K.

Each scale is a BIDS derivative of its own, ``OUT_DIR/pavi<K>/``, and all of them share
``OUT_DIR/work/`` (the cleaned runs and the fingerprint store are computed once, under the
work folder's lock). With ``model.nested=true`` the scales are then nested, from the finest
down: each coarser scale's parents are chosen from the two fits' group profiles
(:func:`pavi_parcel.model.nesting.choose_parents`), its maps become the sums of its children's
probabilities, and it is exported again (maps, connectomes, report). Its own fit stays in
``model/posterior_independent.h5``; the finer scale's folder gets the parent table
``seg-pavi<fine>_parents-pavi<coarse>.tsv``.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from pavi_parcel.atlas.naming import read_label_table
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.io.files import write_json
from pavi_parcel.io.layout import (
    independent_posterior_path,
    label_table_path,
    parent_table_path,
    posterior_path,
    scale_folder,
)
from pavi_parcel.model.nesting import choose_parents, nest_probabilities
from pavi_parcel.settings.compose import compose, quote_override
from pavi_parcel.settings.schema import RunSettings
from pavi_parcel.stores.posterior import Posterior, read_posterior, read_subject_probs, write_posterior

from .pipeline import publish, run

log = logging.getLogger(__name__)
PARENT_COLUMNS = {
    "index": "Fine network: its index in this folder's label table (seg-pavi<fine>_dseg.tsv)",
    "name": "Fine network: its name in that table",
    "parent_index": "Coarse parent: its index in the coarse scale's label table "
                    "(../pavi<coarse>/seg-pavi<coarse>_dseg.tsv)",
    "parent_name": "Coarse parent: its name in that table",
    "similarity": "Cosine similarity of the fine and the coarse group profiles (fingerprint space)",
}


def run_scales(overrides: Sequence[str], scales: Sequence[int]) -> list[Path]:
    """Fit every scale from one ingest and store; nest them with ``model.nested=true``.

    Parameters
    ----------
    overrides : sequence of str
        The Hydra overrides of the fit (without ``model.n_networks``); ``out_dir`` is the folder
        that receives ``pavi<K>/`` per scale and the shared ``work/``.
    scales : sequence of int
        The numbers of networks, at least two different ones.

    Returns
    -------
    list of Path
        The scale folders, coarsest first.
    """
    ks = sorted({int(k) for k in scales})
    base = compose(overrides)
    if len(ks) < 2:
        raise BadInputError("Too few scales", "two or more numbers of networks (--n-networks 7 17)",
                            " ".join(map(str, scales)), "pass one --n-networks value for a single fit")
    if base.model.atlas_prior is not None:
        raise BadInputError("An atlas prior fixes the number of networks", "no --prior with several scales",
                            f"--prior {base.model.atlas_prior} with --n-networks {' '.join(map(str, ks))}",
                            "fit the scales without --prior, or one scale with it")
    work = base.work_folder
    folders: dict[int, Path] = {}
    for k in ks:
        folder = scale_folder(base.out_dir, k)
        log.info("Scale K = %d: %s (work folder %s, shared)", k, folder, work)
        settings = compose([*overrides, f"model.n_networks={k}", f"out_dir={quote_override(str(folder))}",
                            f"work_dir={quote_override(str(work))}"])
        folders[k] = run(settings)
    if base.model.nested and base.stop_after in (None, "export"):
        nest_scales(folders, base)
    return [folders[k] for k in ks]


def nest_scales(folders: dict[int, Path], settings: RunSettings) -> None:
    """Nest fitted scales from the finest down (see the module docstring)."""
    ks = sorted(folders)
    for coarse, fine in reversed(list(zip(ks[:-1], ks[1:]))):
        fine_dir, coarse_dir = folders[fine], folders[coarse]
        coarse_post = read_posterior(_independent_fit(coarse_dir), subjects=False)
        # a nested scale keeps its own fit's group profiles, so the finer posterior's are always its own fit's
        fine_post = read_posterior(posterior_path(fine_dir), subjects=False)
        parents, similarity = choose_parents(fine_post.group_profiles, coarse_post.group_profiles)
        if fine_post.subjects != coarse_post.subjects or not np.array_equal(fine_post.vertex_index,
                                                                            coarse_post.vertex_index):
            raise BadInputError(f"Cannot nest {coarse_dir.name} under {fine_dir.name}",
                                "fits of the same subjects and vertices", "other subjects or vertices",
                                "rerun the scales with the same settings (one command)")
        nested = Posterior(np.empty((0,)), nest_probabilities(fine_post.group_probs, parents, coarse),
                           coarse_post.group_profiles, fine_post.subjects, fine_post.sessions,
                           fine_post.vertex_index, fine_post.space,
                           {**coarse_post.attrs, "nested_from": int(fine), "parents": parents.tolist()})
        source = posterior_path(fine_dir)
        write_posterior(posterior_path(coarse_dir), nested, subject_rows=lambda s, src=source, p=parents, k=coarse:
                        nest_probabilities(read_subject_probs(src, s), p, k))
        log.info("K = %d nested under K = %d: children per coarse network %s", coarse, fine,
                 np.bincount(parents, minlength=coarse).tolist())
        publish(coarse_dir, settings)
        write_parent_table(fine_dir, coarse_dir, fine, coarse, parents, similarity)


def _independent_fit(folder: Path) -> Path:
    """The scale's own posterior, moved aside the first time the scale is nested (or after a refit)."""
    current, own = posterior_path(folder), independent_posterior_path(folder)
    with h5py.File(current, "r") as h5:
        already = "nested_from" in h5.attrs
    if not already:
        os.replace(current, own)
    elif not own.is_file():
        raise BadInputError(f"{folder} holds nested maps without the fit they came from",
                            independent_posterior_path(folder).name, "no such file",
                            "rerun the multi-scale fit with force=true")
    return own


def write_parent_table(fine_dir: Path, coarse_dir: Path, fine: int, coarse: int, parents: np.ndarray,
                       similarity: np.ndarray) -> Path:
    """``seg-pavi<fine>_parents-pavi<coarse>.tsv`` (and its JSON) in the fine scale's folder, label-table order."""
    fine_table = read_label_table(label_table_path(fine_dir, fine))
    coarse_table = read_label_table(label_table_path(coarse_dir, coarse))
    coarse_label = {int(c): i for i, c in enumerate(coarse_table.order)}
    path = parent_table_path(fine_dir, fine, coarse)
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(list(PARENT_COLUMNS))
        for i, f in enumerate(fine_table.order):
            c = coarse_label[int(parents[f])]
            writer.writerow([i + 1, fine_table.names[i], c + 1, coarse_table.names[c], f"{similarity[f]:.4f}"])
    write_json(path.with_suffix(".json"), {k: {"Description": v} for k, v in PARENT_COLUMNS.items()})
    return path


__all__ = ["nest_scales", "run_scales", "write_parent_table"]
