"""The connectome stage: network time series of every run, then every subject's connectomes and the population graph.

Resumable: a run's time series (with its correlation matrix) is written once, atomically, and
reused while the subject's map, the run and the weighting are unchanged (its sidecar records
them); the group-sparse estimate is cached in ``model/connectome/`` under a key of all of its
inputs, so a run killed at any point continues from what it had written.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pavi_parcel import __version__
from pavi_parcel.atlas.naming import LabelTable, read_label_table
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.io.layout import connectome_model_folder, label_table_path, qc_table_path
from pavi_parcel.settings.compose import saved_settings
from pavi_parcel.settings.schema import ConnectomeSettings
from pavi_parcel.stores.posterior import fitted_posterior, read_posterior, read_subject_probs
from pavi_parcel.stores.timeseries import read_run_attrs, read_run_timeseries

from .estimate import CohortConnectomes, correlation_matrix, group_sparse_connectomes, pooled
from .files import (
    STATS,
    connectome_entities,
    read_sidecar,
    read_timeseries,
    relmat_path,
    subject_relmat_path,
    timeseries_path,
    write_relmat,
    write_timeseries,
)
from .graph import write_population_graph
from .timeseries import network_weights, run_network_timeseries

log = logging.getLogger(__name__)
CACHE_NAME = "group_sparse.npz"
MIN_SUBJECTS = 2
POOLED = "Pearson correlation of the network time series, all of the subject's runs (each standardised) pooled."
SPARSE = ("Partial correlation between the networks from the subject's sparse precision, estimated with a "
          "population prior (group-sparse covariance: one edge set for the cohort, weights per subject); 0 = no edge.")


@dataclass
class StoredRun:
    """A run of the fit's cohort in the ingest store."""

    key: str
    subject: str
    session: str | None
    path: Path
    attrs: dict[str, Any]


def connectome_stage(out_dir: Path, settings: ConnectomeSettings) -> list[Path]:
    """Write every subject's network time series and connectomes, and the population graph.

    Parameters
    ----------
    out_dir : Path
        A fitted and exported run (``model/posterior.h5``, ``seg-pavi<K>_dseg.tsv``), whose
        cleaned time series are still in its work folder.
    settings : ConnectomeSettings
        Weighting of the network time series and the cross-validation grid.

    Returns
    -------
    list of Path
        The files written (reused files are not listed).

    Raises
    ------
    BadInputError
        No fit, no label table, no cleaned time series, or too little data for the estimator.
    """
    out_dir = Path(out_dir)
    source = fitted_posterior(out_dir)
    post = read_posterior(source, subjects=False)
    table = _label_table(out_dir, post.n_networks)
    runs = cohort_runs(out_dir, post.subjects)
    entities = connectome_entities(post.space, post.n_networks)
    written: list[Path] = []
    series: dict[str, np.ndarray] = {}
    inputs: dict[str, list[str]] = {}
    for s, label in enumerate(tqdm(post.subjects, desc="connectome", unit="subject")):
        if not runs.get(label):
            log.warning("Participant %s has no cleaned run left in the work folder: no connectome", label)
            continue
        probs = table.reorder(read_subject_probs(source, s))
        digest = hashlib.sha256(np.ascontiguousarray(probs, dtype=np.float32).tobytes()).hexdigest()[:16]
        weights = network_weights(probs, settings.weighting)
        frames = []
        for run in runs[label]:
            ts, new = _run_series(out_dir, run, post.vertex_index, weights, table, entities,
                                  {"map": digest, "run": str(run.attrs.get("fingerprint")),
                                   "weighting": settings.weighting})
            frames.append(ts)
            written += new
        series[label] = pooled(frames)
        inputs[label] = [digest, settings.weighting, *sorted(str(r.attrs.get("fingerprint")) for r in runs[label])]
    labels = list(series)
    if len(labels) < MIN_SUBJECTS:
        log.warning("%d participant(s) with runs: no population prior to estimate, so only correlations are "
                    "written (partial correlations need %d or more)", len(labels), MIN_SUBJECTS)
        for label in labels:
            written += write_relmat(subject_relmat_path(out_dir, label, entities, STATS[0]),
                                    correlation_matrix(series[label]), table.names,
                                    {"NetworkWeighting": settings.weighting, "Subject": label,
                                     "NumberOfVolumes": int(series[label].shape[0]), "Description": POOLED})
        return written
    cohort = _estimate(out_dir, labels, [series[s] for s in labels], settings, inputs)
    base = {"NetworkWeighting": settings.weighting, "Estimator": "nilearn GroupSparseCovarianceCV",
            "Alpha": cohort.alpha, "LabelTable": label_table_path(out_dir, post.n_networks).name,
            "Software": f"pavi-parcel {__version__}"}
    for i, label in enumerate(labels):
        meta = {**base, "Subject": label, "NumberOfVolumes": int(cohort.n_frames[i])}
        written += write_relmat(subject_relmat_path(out_dir, label, entities, STATS[0]), cohort.correlation[i],
                                table.names, {**meta, "Description": POOLED})
        written += write_relmat(subject_relmat_path(out_dir, label, entities, STATS[1]), cohort.partial[i],
                                table.names, {**meta, "Description": SPARSE})
    written += write_population_graph(out_dir, cohort, labels, table, base)
    log.info("Connectomes of %d participants: %d of %d network pairs in the population graph (alpha %.3g)",
             len(labels), int(cohort.edges.sum() // 2), post.n_networks * (post.n_networks - 1) // 2, cohort.alpha)
    return written


def cohort_runs(out_dir: Path, subjects: list[str]) -> dict[str, list[StoredRun]]:
    """The cleaned runs of the fitted subjects that passed the quality gates, by subject.

    Raises
    ------
    BadInputError
        No cleaned time series of the fit's subjects in its work folder.
    """
    settings = saved_settings(out_dir)
    work = settings.work_folder if settings is not None else Path(out_dir) / "work"
    excluded = _excluded_runs(qc_table_path(out_dir))
    wanted = set(subjects)
    out: dict[str, list[StoredRun]] = {}
    for path in sorted((work / "timeseries").glob("*.h5")):
        attrs = read_run_attrs(path)
        if attrs is None or str(attrs.get("subject")) not in wanted or path.stem in excluded:
            continue
        subject = str(attrs["subject"])
        out.setdefault(subject, []).append(StoredRun(path.stem, subject, str(attrs.get("session") or "") or None,
                                                     path, attrs))
    if not out:
        raise BadInputError(f"No cleaned time series of the fitted participants in {work / 'timeseries'}",
                            "the ingest store of the fit (work/timeseries/*.h5)", "none",
                            "rerun `pavi-parcel fit` with the same command (it re-ingests only what is missing)")
    return out


def _excluded_runs(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    with open(path, newline="") as handle:
        return {row["run"] for row in csv.DictReader(handle, delimiter="\t") if row.get("status") == "excluded"}


def _label_table(out_dir: Path, n_networks: int) -> LabelTable:
    path = label_table_path(out_dir, n_networks)
    if not path.is_file():
        raise BadInputError(f"No label table in {out_dir}", path.name, "no such file",
                            f"run `pavi-parcel export maps {out_dir}` first")
    return read_label_table(path)


def _run_series(out_dir: Path, run: StoredRun, vertex_index: np.ndarray, weights: np.ndarray, table: LabelTable,
                entities: str, provenance: dict[str, str]) -> tuple[np.ndarray, list[Path]]:
    """A run's network time series: reused from its TSV when its sources are unchanged, else computed."""
    path = timeseries_path(out_dir, run.key, run.subject, run.session, entities)
    meta = read_sidecar(path) if path.is_file() else None
    if meta is not None and meta.get("Provenance") == provenance:
        return read_timeseries(path), []
    series = run_network_timeseries(read_run_timeseries(run.path), vertex_index, weights)
    common = {"RepetitionTime": float(run.attrs.get("tr", 0.0)), "Sources": list(run.attrs.get("source_files", [])),
              "NetworkWeighting": provenance["weighting"],
              "LabelTable": label_table_path(out_dir, len(table.names)).name, "Software": f"pavi-parcel {__version__}"}
    # the correlation first: the time series is the run's "done" mark
    written = write_relmat(relmat_path(path.parent, run.key, entities, "pearsoncorrelation"),
                           correlation_matrix(series), table.names,
                           {**common, "Description": "Pearson correlation of the run's network time series."})
    written += write_timeseries(path, series, table.names,
                                {**common, "Provenance": provenance,
                                 "Description": "Network time series: the cleaned vertex time series averaged with "
                                 f"the subject's {provenance['weighting']} map as weights, one column per network."})
    # the connectomes use the series as stored, so a resumed run gives the same matrices byte for byte
    return read_timeseries(path), written


def _estimate(out_dir: Path, labels: list[str], series: list[np.ndarray], settings: ConnectomeSettings,
              inputs: dict[str, list[str]]) -> CohortConnectomes:
    """The group-sparse estimate, from the cache of an identical earlier run when there is one."""
    key = hashlib.sha256(json.dumps({"inputs": inputs, "settings": settings.to_dict()}, sort_keys=True)
                         .encode()).hexdigest()[:16]
    path = connectome_model_folder(out_dir) / CACHE_NAME
    if path.is_file():
        try:
            with np.load(path) as npz:
                if str(npz["key"]) == key:
                    return CohortConnectomes(npz["correlation"], npz["partial"], npz["precision"],
                                             float(npz["alpha"]), npz["n_frames"])
        except (OSError, ValueError, KeyError):
            pass  # unreadable cache: estimate again
    cohort = group_sparse_connectomes(series, alphas=settings.alphas, n_refinements=settings.n_refinements,
                                      max_iter=settings.max_iter)
    with atomic_write(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, key=key, correlation=cohort.correlation, partial=cohort.partial,
                 precision=cohort.precision, alpha=cohort.alpha, n_frames=cohort.n_frames,
                 subjects=np.asarray(labels, dtype=str))
    return cohort


__all__ = ["StoredRun", "cohort_runs", "connectome_stage"]
