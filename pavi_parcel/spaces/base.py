"""A :class:`Space`: where the modelled points live, how a run is read there and how a map is written.

Everything that differs between a surface mesh and a voxel grid (the size of the full space and
its hemispheres, the files a BOLD run is made of, how those files are checked and cleaned, the
default fingerprint seeds, the neighbours of the Potts prior, the map files and their format,
the meshes of the figures) is a method of a space. The stages ask the space of their cohort
instead of branching on its kind; a new space (another mesh density, CIFTI grayordinates) is a
new subclass or instance, not new branches elsewhere.

Full-space convention: a point of the space is an integer in ``0 .. n_total - 1``; on surfaces
the hemispheres follow each other (left then right), on volumes it is the flat C-order index of
the voxel grid. Stores record the space of their points (:meth:`Space.to_attrs`,
:func:`space_from_attrs`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pavi_parcel.exceptions import BadInputError

MAP_KINDS = ("probseg", "dseg", "entropy")
"""The maps of one subject (or the group): soft map, hard map, normalised entropy."""


@dataclass(frozen=True)
class Hemisphere:
    """One hemisphere of a surface space: its BIDS label, structure name and full-space rows."""

    label: str           # "L" or "R" (the BIDS hemi entity)
    name: str            # "left" or "right" (nilearn's mesh parts)
    structure: str       # GIFTI AnatomicalStructurePrimary, e.g. "CortexLeft"
    start: int
    stop: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop)

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class RunHeader:
    """What the headers of a run's files say, before any data are read.

    Attributes
    ----------
    n_frames : int
    n_points : int
        Candidate points (mesh vertices, brain-mask voxels): an upper bound on the valid ones.
    space : Space
        The concrete space of the run (a volume space carries the run's grid).
    """

    n_frames: int
    n_points: int
    space: Space


@dataclass
class CleanedRun:
    """A run after masking and cleaning: ``data`` (n_frames_kept, n_valid) on ``vertex_index``.

    ``tsnr`` is the median temporal SNR of the raw signal over the kept frames
    (:func:`pavi_parcel.spaces.signals.temporal_snr`), for the run's quality gates.
    """

    data: np.ndarray
    vertex_index: np.ndarray
    tsnr: float = float("nan")


class Space(ABC):
    """A space of points where runs are read and maps are written (see the module docstring).

    Attributes
    ----------
    name : str
        The BIDS ``space`` label: ``fsaverage5``, ``MNI152NLin2009cAsym`` ...
    n_total : int
        Points of the full space.
    is_surface : bool
    hemispheres : tuple of Hemisphere
        Surfaces only; empty on volumes.
    map_format : str
        ``gifti``, ``cifti`` or ``nifti``: the format of the maps written in this space.
    file_kind : str
        ``GIFTI``, ``CIFTI`` or ``NIfTI``: the format of the BOLD runs read in this space.
    bold_parts : tuple of str
        The files of one run, by :attr:`pavi_parcel.spaces.registry.BoldFile.part`: ``("L", "R")``
        for a GIFTI pair, ``("",)`` for one file.
    needs_mask : bool
        Whether a run comes with fMRIPrep's ``desc-brain_mask`` (volumes).
    """

    KIND: ClassVar[str] = ""
    map_format: ClassVar[str] = ""
    file_kind: ClassVar[str] = ""
    bold_parts: ClassVar[tuple[str, ...]] = ("",)
    needs_mask: ClassVar[bool] = False
    name: str
    n_total: int

    @property
    def is_surface(self) -> bool:
        return bool(self.hemispheres)

    @property
    def hemispheres(self) -> tuple[Hemisphere, ...]:
        return ()

    @property
    def grid_shape(self) -> tuple[int, ...] | None:
        return None

    @property
    def affine(self) -> np.ndarray | None:
        return None

    # ------------------------------------------------------------------ identity and storage
    def _identity(self) -> tuple:
        return (self.KIND, self.name, int(self.n_total), self.grid_shape)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n_total={self.n_total})"

    def to_attrs(self, attrs: Any) -> None:
        """Record the space in an HDF5 attribute manager (or any mapping)."""
        attrs["space"] = self.name
        attrs["n_total"] = int(self.n_total)

    def attrs(self) -> dict[str, Any]:
        """The space as plain attributes (what :meth:`to_attrs` writes)."""
        out: dict[str, Any] = {}
        self.to_attrs(out)
        return out

    # ------------------------------------------------------------------ runs
    def mesh_note(self) -> str | None:
        """One line for the log when something the space needs for the Potts term or figures is missing."""
        return None

    def notes(self) -> list[str]:
        """What a user should know about how runs are read in this space (logged once per fit)."""
        note = self.mesh_note()
        return [] if note is None else [note]

    @abstractmethod
    def scan_run(self, bold: Sequence[Path], mask: Path | None, key: str) -> RunHeader:
        """Frames, candidate points and concrete space of a run from its headers (no data read).

        Raises
        ------
        BadInputError or BadInputErrors
            Files that do not fit the space, truncated files, single frames.
        """

    @abstractmethod
    def clean_run(self, bold: Sequence[Path], mask: Path | None, n_frames: int, kept: np.ndarray,
                  regressors: Any, sample_mask: np.ndarray | None, cleaning: Mapping[str, Any],
                  key: str) -> tuple[CleanedRun, dict[str, Any]]:
        """Load, mask and clean a run with nilearn.

        Parameters
        ----------
        bold, mask : the run's files
        n_frames : int
            Frames of the run (from :meth:`scan_run`).
        kept : ndarray of int
            Frames kept after non-steady-state removal and scrubbing.
        regressors : DataFrame or None
            Confound regressors (all frames).
        sample_mask : ndarray or None
            The kept frames for nilearn (None = all).
        cleaning : mapping
            Keyword arguments of the nilearn maskers (detrend, standardize, filters, t_r).
        key : str
            The run's name, for messages.

        Returns
        -------
        CleanedRun
            Points constant over the kept frames (medial wall, outside the brain) left out.
        attrs : dict
            The concrete space (:meth:`attrs`), stored with the run.
        """

    @abstractmethod
    def header_tr(self, path: Path) -> tuple[str, float] | None:
        """The repetition time an image header of this space gives, ``(source, seconds)``, or None."""

    @abstractmethod
    def bold_names(self, stem: str) -> list[str]:
        """The file names fMRIPrep gives a run's BOLD images in this space (``stem`` = ``sub-01_task-rest``)."""

    # ------------------------------------------------------------------ fingerprints
    @abstractmethod
    def default_seeds(self, vertex_index: np.ndarray, spacing_mm: float) -> np.ndarray:
        """Default fingerprint seeds among the cohort's points ``vertex_index``, sorted full-space indices."""

    @abstractmethod
    def estimate_seeds(self, n_points: int, spacing_mm: float) -> int:
        """An upper bound on the number of default seeds of ``n_points`` points (for disk estimates)."""

    # ------------------------------------------------------------------ neighbours
    @abstractmethod
    def edges(self) -> np.ndarray:
        """Neighbouring points (mesh edges, face-adjacent voxels): int64 array of shape (E, 2)."""

    # ------------------------------------------------------------------ maps
    @abstractmethod
    def map_paths(self, folder: Path, prefix: str, seg: str) -> dict[str, list[Path]]:
        """The files of one set of maps, ``{kind: [path, ...]}`` for each of :data:`MAP_KINDS`.

        Parameters
        ----------
        folder : Path
            ``OUT_DIR/sub-<label>/anat`` or ``OUT_DIR/group`` (group atlas).
        prefix : str
            ``"sub-<label>_"`` or ``""``.
        seg : str
            ``"seg-pavi<K>"``.
        """

    @abstractmethod
    def write_map(self, kind: str, values: np.ndarray, paths: list[Path], names: list[str],
                  colors: np.ndarray) -> list[Path]:
        """Write one map given on the full space and return the files written.

        Parameters
        ----------
        kind : {"probseg", "dseg", "entropy"}
        values : ndarray
            Full-space values: (n_total, K) probabilities, (n_total,) labels 0..K or entropies.
        paths : list of Path
            From :meth:`map_paths`.
        names : list of str
            Network names in label order.
        colors : ndarray of uint8, shape (K, 3)
        """

    def hemisphere_of(self, path: Path) -> str | None:
        """The hemisphere label a map file holds (``L``/``R``), None for a file of the whole space."""
        return None

    def spatial_reference(self, hemi: str | None) -> str | dict[str, str] | None:
        """The BIDS ``SpatialReference`` of a map file (the template mesh or image its points are on).

        None where the space's name is a standard BIDS template identifier that needs none
        (volumes); surfaces name their TemplateFlow sphere.
        """
        return None

    def map_fields(self, hemi: str | None) -> dict[str, Any]:
        """The space's fields of a map's JSON sidecar (``SpatialReference``, ``Density`` with a ``den-``)."""
        reference = self.spatial_reference(hemi)
        return {"SpatialReference": reference} if reference else {}


def corrupt_file(path: Path, exc: BaseException | None) -> BadInputError:
    """The error for an unreadable or truncated image file."""
    detail = "an unreadable or truncated file" if exc is None else f"{exc.__class__.__name__}: {exc}".splitlines()[0]
    return BadInputError(f"Cannot read {path}", "a complete GIFTI or NIfTI image", detail,
                         "re-run fMRIPrep for this run (or restore the file) or exclude the participant")


def check_finite(values: np.ndarray, path: Path) -> None:
    """Raise when a run's values hold NaN or infinity."""
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - np.count_nonzero(finite))
        raise BadInputError(f"{path.name} has NaN or infinite values", "finite values in every frame",
                            f"{bad} non-finite values", "re-run fMRIPrep for this run or exclude the participant")


class NoValidPoints(BadInputError):
    """No point of a run varies over time: the ingest stage stores it empty, and the quality gates exclude it."""


def check_some_valid(valid: Sequence[np.ndarray], key: str) -> None:
    """Raise :class:`NoValidPoints` when no point of a run varies over time."""
    if not any(v.any() for v in valid):
        raise NoValidPoints(f"Run {key} has no usable vertices", "vertices whose signal varies over time",
                            "constant signal everywhere", "check the BOLD files of this run")


__all__ = ["CleanedRun", "Hemisphere", "MAP_KINDS", "NoValidPoints", "RunHeader", "Space", "check_finite",
           "check_some_valid", "corrupt_file"]
