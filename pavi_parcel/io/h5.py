"""HDF5 helpers every store shares: opening with a clear error, label lists, attributes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pavi_parcel.exceptions import BadInputError

_STR = h5py.string_dtype("utf-8")


CHUNK_VERTICES = 4096


def write_labels(h5: h5py.File, name: str, labels: Sequence[str]) -> None:
    h5.create_dataset(name, data=np.asarray(list(labels), dtype=object), dtype=_STR)


def read_labels(h5: h5py.File, name: str) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in h5[name][()]]


def open_h5(path: Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 store, turning a truncated or foreign file into a clear error."""
    try:
        return h5py.File(path, mode, rdcc_nbytes=64 * 2**20)
    except OSError as exc:
        raise BadInputError(
            f"Cannot read the store {path}", "a complete HDF5 file written by pavi-parcel",
            f"an unreadable file ({exc.__class__.__name__})",
            "delete it and rerun the same command to rebuild it") from exc


def decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value

