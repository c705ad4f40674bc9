"""Connectome files, named as XCP-D names its connectivity outputs, so that the same readers load them.

Per run, in ``OUT_DIR/sub-<label>/[ses-<label>/]func/``::

    <run>_space-<space>_seg-pavi<K>[_den-<den>]_stat-mean_timeseries.tsv            network time series
    <run>_space-<space>_seg-pavi<K>[_den-<den>]_stat-pearsoncorrelation_relmat.tsv  their correlations

Per subject (all of its runs pooled), in ``OUT_DIR/sub-<label>/func/``::

    sub-<label>_space-..._seg-pavi<K>_stat-pearsoncorrelation_relmat.tsv
    sub-<label>_space-..._seg-pavi<K>_stat-partialcorrelation_relmat.tsv   group-sparse (population prior)

``<run>`` is the run's entities (``sub-01_ses-1_task-rest_run-1``). A time-series TSV has one
column per network, named after it, one row per kept frame; a ``relmat`` TSV has a first column
``Node`` and one row and one column per network, both in the label table's order
(``seg-pavi<K>_dseg.tsv``). Each file has a JSON sidecar. The population graph goes to
``OUT_DIR/model/connectome/``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.io.files import write_json
from pavi_parcel.io.layout import bare_label
from pavi_parcel.spaces import Space

STATS = ("pearsoncorrelation", "partialcorrelation")


def connectome_entities(space: Space, n_networks: int) -> str:
    """``space-<space>_seg-pavi<K>[_den-<den>]``: the entities every connectome file carries."""
    den = getattr(space, "den", None)
    return f"space-{space.name}_seg-pavi{int(n_networks)}" + (f"_den-{den}" if den else "")


def run_folder(out_dir: Path, subject: str, session: str | None) -> Path:
    """``OUT_DIR/sub-<label>/[ses-<label>/]func``."""
    folder = Path(out_dir) / f"sub-{bare_label(subject)}"
    return (folder / f"ses-{session}" if session else folder) / "func"


def timeseries_path(out_dir: Path, run_key: str, subject: str, session: str | None, entities: str) -> Path:
    """A run's network time-series TSV."""
    return run_folder(out_dir, subject, session) / f"{run_key}_{entities}_stat-mean_timeseries.tsv"


def relmat_path(folder: Path, stem: str, entities: str, stat: str) -> Path:
    """``<folder>/<stem>_<entities>_stat-<stat>_relmat.tsv``."""
    return Path(folder) / f"{stem}_{entities}_stat-{stat}_relmat.tsv"


def subject_relmat_path(out_dir: Path, subject: str, entities: str, stat: str) -> Path:
    """A subject's pooled connectome."""
    label = bare_label(subject)
    return relmat_path(Path(out_dir) / f"sub-{label}" / "func", f"sub-{label}", entities, stat)


def sidecar(path: Path) -> Path:
    """``<name>.json`` beside ``<name>.tsv``."""
    return path.with_suffix(".json")


def _format(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.6g}"


def write_timeseries(path: Path, series: np.ndarray, names: list[str], meta: dict[str, Any]) -> list[Path]:
    """Write network time series (n_frames, K) as TSV (a column per network) with its sidecar, atomically."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(names)
        writer.writerows([_format(v) for v in row] for row in np.asarray(series, dtype=np.float64))
    return [path, write_json(sidecar(path), meta)]


def write_relmat(path: Path, matrix: np.ndarray, names: list[str], meta: dict[str, Any]) -> list[Path]:
    """Write a (K, K) matrix as XCP-D's ``relmat`` TSV (first column ``Node``) with its sidecar, atomically."""
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["Node", *names])
        writer.writerows([name, *(_format(v) for v in row)] for name, row in zip(names, np.asarray(matrix)))
    return [path, write_json(sidecar(path), meta)]


def read_timeseries(path: Path) -> np.ndarray:
    """A time-series TSV back as float64 (n_frames, K) (``n/a`` = NaN)."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))[1:]
    return np.array([[np.nan if v == "n/a" else float(v) for v in row] for row in rows], dtype=np.float64)


def read_relmat(path: Path) -> tuple[np.ndarray, list[str]]:
    """A ``relmat`` TSV back: the (K, K) matrix and the network names."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    names = rows[0][1:]
    matrix = np.array([[np.nan if v == "n/a" else float(v) for v in row[1:]] for row in rows[1:]])
    return matrix, names


def read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(sidecar(path).read_text())
    except (OSError, ValueError):
        return None


__all__ = ["STATS", "connectome_entities", "read_relmat", "read_sidecar", "read_timeseries", "relmat_path",
           "run_folder", "sidecar", "subject_relmat_path", "timeseries_path", "write_relmat", "write_timeseries"]
