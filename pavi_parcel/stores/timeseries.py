"""Cleaned time series of the ingest stage: one small HDF5 file per run.

Time-series store, ``OUT_DIR/work/timeseries/<run>.h5`` (one small file per run, written
atomically, so parallel workers never share an HDF5 handle and a killed run leaves nothing)::

    /data            float32 (n_frames_kept, n_valid)   cleaned, standardised time series
    /vertex_index    int64   (n_valid,)                 indices of the kept vertices in the full space
    attrs            tr, n_frames_total, n_frames_kept, source_files (JSON), strategy (JSON),
                     space, n_total, fingerprint (hash of inputs and settings), version
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pavi_parcel import __version__
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.io.h5 import CHUNK_VERTICES, decode_attr, open_h5


@dataclass
class RunTimeSeries:
    """Cleaned time series of one run, as stored.

    Attributes
    ----------
    data : ndarray of shape (n_frames_kept, n_valid)
    vertex_index : ndarray of shape (n_valid,)
    attrs : dict
        Provenance: tr, n_frames_total, n_frames_kept, source_files, strategy, space, ...
    """

    data: np.ndarray
    vertex_index: np.ndarray
    attrs: dict[str, Any]

    def columns_of(self, vertex_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where full-space vertices are among this run's columns.

        Parameters
        ----------
        vertex_index : ndarray of int64, shape (n,)
            Sorted full-space indices (the cohort's vertices).

        Returns
        -------
        columns : ndarray of int64, shape (n,)
            Column of ``data`` of each vertex (meaningless where not present).
        present : ndarray of bool, shape (n,)
            True where the run has data at the vertex.
        """
        if not self.vertex_index.size:
            return np.zeros(len(vertex_index), dtype=np.int64), np.zeros(len(vertex_index), dtype=bool)
        columns = np.searchsorted(self.vertex_index, vertex_index)
        present = self.vertex_index[np.minimum(columns, self.vertex_index.size - 1)] == vertex_index
        return columns, present


def write_run_timeseries(path: Path, data: np.ndarray, vertex_index: np.ndarray,
                         attrs: dict[str, Any]) -> None:
    """Write one run's cleaned time series atomically.

    Parameters
    ----------
    path : Path
        Target file, ``work/timeseries/<run>.h5``.
    data : ndarray of shape (n_frames_kept, n_valid)
    vertex_index : ndarray of shape (n_valid,)
        Indices of the columns of ``data`` in the full space.
    attrs : dict
        JSON-serialisable provenance; dicts and lists are stored as JSON strings.
    """
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("data", data=np.asarray(data, dtype=np.float32),
                          chunks=(data.shape[0], min(data.shape[1], CHUNK_VERTICES)) if data.size else None)
        h5.create_dataset("vertex_index", data=np.asarray(vertex_index, dtype=np.int64))
        for key, value in {**attrs, "version": __version__}.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value


def read_run_attrs(path: Path) -> dict[str, Any] | None:
    """Provenance of a stored run, or None when the file is missing or unreadable."""
    try:
        with h5py.File(path, "r") as h5:
            return {k: decode_attr(v) for k, v in h5.attrs.items()}
    except (OSError, KeyError):
        return None


def read_run_timeseries(path: Path) -> RunTimeSeries:
    """Read one run written by :func:`write_run_timeseries`."""
    with open_h5(path) as h5:
        return RunTimeSeries(h5["data"][()], h5["vertex_index"][()],
                             {k: decode_attr(v) for k, v in h5.attrs.items()})


__all__ = ["RunTimeSeries", "read_run_attrs", "read_run_timeseries", "write_run_timeseries"]
