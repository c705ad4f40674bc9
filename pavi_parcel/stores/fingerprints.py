"""The fingerprint store: one HDF5 file per cohort (HDF5 helpers every store shares: :mod:`pavi_parcel.io.h5`).

The other stores: :mod:`.timeseries` (cleaned time series, one file per run) and
:mod:`.posterior` (the fitted parcellation).

Layouts
-------
Fingerprint store, ``OUT_DIR/work/fingerprints.h5``::

    /bits            uint8   (n_subjects, n_sessions, n_vertices, ceil(D / 8))   binarised, bit-packed
       or /values    float16 (n_subjects, n_sessions, n_vertices, D)              continuous mode
    /session_mask    bool    (n_subjects, n_sessions)   True where the subject has that session
    /complete        bool    (n_subjects, n_sessions)   True once the entry is written (resume)
    /vertex_index    int64   (n_vertices,)              cohort vertices in the full space
    /seed_index      int64   (D,)                       seed vertices in the full space
    /subjects, /sessions     UTF-8 labels without ``sub-`` / ``ses-``
    attrs            space, n_total, grid_shape, affine (volumes), n_seeds, top_fraction
                     (0 = continuous), settings (JSON), version

A binarised fingerprint with ``m`` ones among ``D`` entries, demeaned and L2-normalised, is
``(b - m / D) / sqrt(m - m**2 / D)``: the bits are all it takes, so a cohort of 100 subjects x
2 sessions x 18,715 vertices x 1,175 seeds takes 0.55 GB instead of 19 GB in float32.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pavi_parcel import __version__
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.io.atomic import as_resource_error
from pavi_parcel.io.h5 import decode_attr, open_h5, read_labels, write_labels
from pavi_parcel.spaces import Space, space_from_attrs


# --------------------------------------------------------------------------- fingerprints
def n_packed_bytes(n_seeds: int) -> int:
    """Bytes per bit-packed fingerprint of ``n_seeds`` entries."""
    return (n_seeds + 7) // 8


def unpack_fingerprints(bits: np.ndarray, n_seeds: int) -> np.ndarray:
    """Turn bit-packed binary fingerprints into demeaned, unit-norm float32 vectors.

    Parameters
    ----------
    bits : ndarray of uint8, shape (..., ceil(n_seeds / 8))
    n_seeds : int

    Returns
    -------
    ndarray of float32, shape (..., n_seeds)
        ``(b - m / D) / sqrt(m - m**2 / D)`` with ``m`` the number of ones of each vector;
        all-zero vectors (no valid data) stay zero.
    """
    binary = np.unpackbits(bits, axis=-1, count=n_seeds)
    ones = binary.sum(axis=-1, keepdims=True, dtype=np.float32)
    variance = ones - ones**2 / n_seeds
    scale = np.zeros_like(variance)
    np.divide(1.0, np.sqrt(variance, where=variance > 0, out=np.zeros_like(variance)),
              out=scale, where=variance > 0)
    # Two in-place passes over one float32 buffer: x = b * scale - (m / D) * scale.
    out = binary.astype(np.float32)
    out *= scale
    out -= ones / n_seeds * scale
    return out


def normalize_continuous(values: np.ndarray) -> np.ndarray:
    """Demean along the last axis and scale to unit L2 norm (zero vectors stay zero), float32."""
    out = np.asarray(values, dtype=np.float32) - np.mean(values, axis=-1, keepdims=True, dtype=np.float32)
    norm = np.linalg.norm(out, axis=-1, keepdims=True)
    np.divide(out, norm, out=out, where=norm > 0)
    return out


class FingerprintStore:
    """Read access to a fingerprint store; slices stream from disk, nothing is cached whole.

    Parameters
    ----------
    path : str or Path
        ``fingerprints.h5`` written by :class:`FingerprintWriter`.

    Attributes
    ----------
    subjects, sessions : list of str
    vertex_index : ndarray of shape (n_vertices,)
    seed_index : ndarray of shape (n_seeds,)
    session_mask : ndarray of bool, shape (n_subjects, n_sessions)
    space : Space
    binary : bool
        True for bit-packed top-fraction fingerprints, False for continuous ones.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._h5 = open_h5(self.path)
        h5 = self._h5
        if "complete" not in h5 or not bool(np.all(h5["complete"][()] | ~h5["session_mask"][()])):
            self._h5.close()
            raise BadInputError(f"Fingerprint store {self.path} is incomplete",
                                "a store whose every subject and session was written",
                                "missing entries", "rerun the same command to finish it")
        self.subjects = read_labels(h5, "subjects")
        self.sessions = read_labels(h5, "sessions")
        self.vertex_index = h5["vertex_index"][()]
        self.seed_index = h5["seed_index"][()]
        self.session_mask = h5["session_mask"][()]
        self.space = space_from_attrs(h5.attrs)
        self.binary = "bits" in h5
        self._data = h5["bits"] if self.binary else h5["values"]
        self.settings = decode_attr(h5.attrs.get("settings", "{}"))

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    @property
    def n_sessions(self) -> int:
        return len(self.sessions)

    @property
    def n_vertices(self) -> int:
        return len(self.vertex_index)

    @property
    def n_seeds(self) -> int:
        return len(self.seed_index)

    def read(self, subject: int, vertices: np.ndarray | slice | None = None) -> np.ndarray:
        """Fingerprints of one subject, all sessions.

        Parameters
        ----------
        subject : int
            Subject row.
        vertices : ndarray of int, slice or None
            Vertex rows (any order, repeats allowed); None for all.

        Returns
        -------
        ndarray of float32, shape (n_sessions, n_selected, n_seeds)
            Demeaned unit vectors; zero for a session the subject does not have.
        """
        raw = self.read_packed(subject, vertices)
        return unpack_fingerprints(raw, self.n_seeds) if self.binary else normalize_continuous(raw)

    def read_subjects(self, subjects: Sequence[int], vertices: np.ndarray | slice | None = None) -> np.ndarray:
        """Fingerprints of several subjects: ndarray of shape (n_sel_subjects, n_sessions, n_selected, n_seeds)."""
        return np.stack([self.read(int(s), vertices) for s in subjects])

    def read_packed(self, subject: int, vertices: np.ndarray | slice | None = None) -> np.ndarray:
        """Stored rows of one subject, undecoded: what fitting code factors or unpacks itself.

        Returns
        -------
        ndarray
            uint8 bits of shape (n_sessions, n_selected, ceil(D / 8)) for a binarised store,
            float16 values of shape (n_sessions, n_selected, D) for a continuous one.
        """
        if vertices is None or isinstance(vertices, slice):
            return self._data[subject, :, vertices if vertices is not None else slice(None)]
        vertices = np.asarray(vertices)
        # h5py needs increasing indices: read the covering block, then pick rows in memory.
        lo, hi = int(vertices.min()), int(vertices.max()) + 1
        block = self._data[subject, :, lo:hi]
        return block[:, vertices - lo]

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> FingerprintStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FingerprintWriter:
    """Build a fingerprint store entry by entry; resumable; renamed into place when complete.

    Entries are written to ``<path>.partial``; reopening an existing partial file resumes it
    (entries already marked complete are skipped by the caller through :meth:`is_done`).
    A partial file that cannot be opened (killed mid-write) is rebuilt from scratch.

    Parameters
    ----------
    path : Path
        Final store path.
    subjects, sessions : sequence of str
    session_mask : ndarray of bool, shape (n_subjects, n_sessions)
    vertex_index : ndarray of shape (n_vertices,)
    seed_index : ndarray of shape (n_seeds,)
    space : Space
    top_fraction : float
        Fraction of ones per binarised fingerprint; 0 stores continuous float16 values.
    settings : dict
        Settings that made the store (saved as JSON, compared on rerun by the caller).
    """

    def __init__(self, path: Path, subjects: Sequence[str], sessions: Sequence[str],
                 session_mask: np.ndarray, vertex_index: np.ndarray, seed_index: np.ndarray,
                 space: Space, top_fraction: float, settings: dict[str, Any]):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.n_seeds = len(seed_index)
        self.top_fraction = float(top_fraction)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        settings_json = json.dumps(settings, sort_keys=True)
        self._h5 = self._reopen(settings_json)
        if self._h5 is None:
            try:
                self._h5 = self._create(subjects, sessions, session_mask, vertex_index, seed_index,
                                        space, settings_json)
            except OSError as exc:  # disk full (the space is allocated now) or not writable
                self.partial.unlink(missing_ok=True)
                raise as_resource_error(exc, self.path) from exc
        self._complete = self._h5["complete"]

    def _reopen(self, settings_json: str) -> h5py.File | None:
        if not self.partial.exists():
            return None
        try:
            h5 = h5py.File(self.partial, "r+")
            if h5.attrs.get("settings") == settings_json and "complete" in h5:
                return h5
            h5.close()
        except (OSError, KeyError):
            pass
        self.partial.unlink()
        return None

    def _create(self, subjects, sessions, session_mask, vertex_index, seed_index, space,
                settings_json) -> h5py.File:
        h5 = h5py.File(self.partial, "w")
        n_sub, n_ses, n_vert = len(subjects), len(sessions), len(vertex_index)
        # Contiguous layout with its space allocated now: later writes only overwrite bytes in
        # place and never touch HDF5 metadata, so a process killed mid-entry cannot damage the
        # entries already marked complete (see :meth:`write`).
        if self.top_fraction > 0:
            _allocated_dataset(h5, "bits", (n_sub, n_ses, n_vert, n_packed_bytes(self.n_seeds)), np.uint8)
        else:
            _allocated_dataset(h5, "values", (n_sub, n_ses, n_vert, self.n_seeds), np.float16)
        h5.create_dataset("session_mask", data=np.asarray(session_mask, dtype=bool))
        h5.create_dataset("complete", data=np.zeros((n_sub, n_ses), dtype=bool))
        h5.create_dataset("vertex_index", data=np.asarray(vertex_index, dtype=np.int64))
        h5.create_dataset("seed_index", data=np.asarray(seed_index, dtype=np.int64))
        write_labels(h5, "subjects", subjects)
        write_labels(h5, "sessions", sessions)
        space.to_attrs(h5.attrs)
        h5.attrs["n_seeds"] = self.n_seeds
        h5.attrs["top_fraction"] = self.top_fraction
        h5.attrs["settings"] = settings_json
        h5.attrs["version"] = __version__
        h5.flush()
        return h5

    def is_done(self, subject: int, session: int) -> bool:
        """True when the entry was written by this or an earlier, interrupted, run."""
        return bool(self._complete[subject, session])

    def write(self, subject: int, session: int, fingerprints: np.ndarray) -> None:
        """Store one subject-session entry.

        Parameters
        ----------
        fingerprints : ndarray, shape (n_vertices, ceil(D / 8)) uint8 when binarised
            (see :func:`pavi_parcel.fingerprints.binarize_top_fraction`), or
            (n_vertices, D) float when continuous.
        """
        name = "bits" if self.top_fraction > 0 else "values"
        try:
            self._h5[name][subject, session] = fingerprints
            self._h5.flush()  # the entry's bytes reach the file before the flag that vouches for them
            self._complete[subject, session] = True
            self._h5.flush()
        except OSError as exc:
            raise as_resource_error(exc, self.partial) from exc

    def finish(self) -> Path:
        """Close the store and rename it into place; returns the final path."""
        mask = self._h5["session_mask"][()]
        missing = mask & ~self._complete[()]
        self._h5.close()
        if missing.any():
            raise RuntimeError(f"{int(missing.sum())} fingerprint entries were never written")
        self.partial.replace(self.path)
        return self.path

    def close(self) -> None:
        """Close without finishing (the partial file is kept for a resume)."""
        if self._h5.id.valid:
            self._h5.close()


def _allocated_dataset(h5: h5py.File, name: str, shape: tuple[int, ...], dtype: type) -> h5py.Dataset:
    """Create a contiguous dataset whose file space is allocated (and zero-filled) at once."""
    space = h5py.h5s.create_simple(shape)
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.CONTIGUOUS)
    plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    plist.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    plist.set_fill_value(np.zeros((), dtype=dtype))
    dsid = h5py.h5d.create(h5.id, name.encode(), h5py.h5t.py_create(np.dtype(dtype)), space, dcpl=plist)
    return h5py.Dataset(dsid)
