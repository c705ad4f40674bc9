"""One preprocessed BOLD run and the files that belong to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pavi_parcel.spaces import Space


@dataclass(frozen=True)
class BoldRun:
    """One preprocessed BOLD run and the files that belong to it.

    Attributes
    ----------
    subject : str
        Label without ``sub-``.
    session, task, run : str or None
        Entity labels (task is always present; session and run may be absent).
    space : Space
        The space of the run's files (a volume space without its grid until the run is read).
    bold : tuple of Path
        ``(left, right)`` GIFTIs, ``(dtseries,)`` CIFTI or ``(nifti,)`` for volumes.
    mask : Path or None
        fMRIPrep ``desc-brain_mask`` of a volume run; None on surfaces.
    confounds : Path or None
        fMRIPrep confounds table; None when the run has none.
    tr : float
        Repetition time in seconds.
    """

    subject: str
    session: str | None
    task: str
    run: str | None
    space: Space
    bold: tuple[Path, ...]
    mask: Path | None
    confounds: Path | None
    tr: float

    @property
    def key(self) -> str:
        """``sub-01_ses-1_task-rest_run-1`` (absent entities left out): the run's file stem."""
        parts = [("sub", self.subject), ("ses", self.session), ("task", self.task), ("run", self.run)]
        return "_".join(f"{k}-{v}" for k, v in parts if v)


__all__ = ["BoldRun"]
