"""Cleaning settings and fMRIPrep confounds, through ``nilearn.interfaces.fmriprep.load_confounds``.

:class:`IngestSettings` is the validated ``ingest`` config group. :func:`load_run_confounds`
turns a run's confounds table into the regressors and the kept-frame index (non-steady-state
volumes and, with ``scrub``, high-motion frames removed) that the nilearn maskers take.

``load_confounds`` finds the table from the image names, which it expects in the newest
fMRIPrep spelling, next to the images, and alone of its kind. The table is therefore shown to
it in a private temporary folder under the canonical names (a link, or a copy where links are
not allowed), so older names (``_space-fsaverage5_hemi-L.func.gii``,
``_desc-confounds_regressors.tsv``) and folders holding both spellings work the same.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from pavi_parcel.bids.discovery import BoldRun
from pavi_parcel.exceptions import BadInputError

STRATEGIES = ("motion", "wm_csf", "global_signal", "compcor", "high_pass", "scrub", "non_steady_state")
MODELS = ("basic", "derivatives", "power2", "full")
STANDARDIZE = ("zscore_sample", "zscore", "psc")


@dataclass(frozen=True)
class IngestSettings:
    """The ``ingest`` config group, validated (see ``conf/ingest/default.yaml``)."""

    strategy: tuple[str, ...] = ("motion", "wm_csf", "high_pass", "scrub")
    motion: str = "full"
    wm_csf: str = "basic"
    global_signal: str = "basic"
    compcor: str = "anat_combined"
    n_compcor: int | str = "all"
    scrub: int = 5
    fd_threshold: float = 0.5
    std_dvars_threshold: float = 1.5
    detrend: bool = True
    standardize: str | bool = "zscore_sample"
    filter: str | bool = "cosine"
    high_pass: float | None = 0.01
    low_pass: float | None = None
    min_frames: int = 50
    on_missing_confounds: str = "warn"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "IngestSettings":
        """Validate a DictConfig or mapping; unknown keys and bad values raise BadInputError."""
        values = _to_dict(cfg)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise BadInputError(f"Unknown ingest setting {', '.join(unknown)}", "keys of conf/ingest/default.yaml",
                                ", ".join(unknown), "check the spelling of the ingest.* overrides")
        if "strategy" in values:
            values["strategy"] = tuple(str(s) for s in (values["strategy"] or ()))
        settings = cls(**values)
        settings._validate()
        return settings

    def _validate(self) -> None:
        bad = [s for s in self.strategy if s not in STRATEGIES]
        _require(not bad, "ingest.strategy", "a list of " + ", ".join(STRATEGIES), str(bad))
        for name in ("motion", "wm_csf", "global_signal"):
            _require(getattr(self, name) in MODELS, f"ingest.{name}", " | ".join(MODELS), getattr(self, name))
        _require(self.filter in ("cosine", "butterworth", False, None), "ingest.filter",
                 "cosine | butterworth | false", self.filter)
        _require(self.standardize in STANDARDIZE or self.standardize in (False, None), "ingest.standardize",
                 " | ".join(STANDARDIZE) + " | false", self.standardize)
        _require(self.on_missing_confounds in ("warn", "error"), "ingest.on_missing_confounds",
                 "warn | error", self.on_missing_confounds)
        _require(_is_int(self.min_frames) and self.min_frames >= 3, "ingest.min_frames", "an integer >= 3",
                 self.min_frames)
        _require(_is_int(self.scrub) and self.scrub >= 0, "ingest.scrub", "an integer >= 0", self.scrub)
        for name in ("fd_threshold", "std_dvars_threshold"):
            _require(_is_number(getattr(self, name)) and getattr(self, name) > 0, f"ingest.{name}",
                     "a number > 0", getattr(self, name))
        _require(isinstance(self.detrend, bool), "ingest.detrend", "true | false", self.detrend)
        _require(self.n_compcor == "all" or (_is_int(self.n_compcor) and self.n_compcor >= 1), "ingest.n_compcor",
                 "all | an integer >= 1", self.n_compcor)
        for name in ("high_pass", "low_pass"):
            value = getattr(self, name)
            _require(value is None or (_is_number(value) and value > 0), f"ingest.{name}",
                     "a frequency in Hz > 0 or null", value)
        _require(self.low_pass is None or self.filter == "butterworth", "ingest.low_pass",
                 "null unless ingest.filter=butterworth (the cosine filter is high-pass only)", self.low_pass)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (stored with every run and hashed into its fingerprint)."""
        out = asdict(self)
        out["strategy"] = list(self.strategy)
        return out

    def confound_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``nilearn.interfaces.fmriprep.load_confounds``."""
        return {"strategy": [s for s in self.strategy if s != "non_steady_state"],
                "motion": self.motion, "wm_csf": self.wm_csf, "global_signal": self.global_signal,
                "compcor": self.compcor, "n_compcor": self.n_compcor, "scrub": int(self.scrub),
                "fd_threshold": float(self.fd_threshold),
                "std_dvars_threshold": float(self.std_dvars_threshold), "demean": True}

    def masker_kwargs(self, tr: float) -> dict[str, Any]:
        """Cleaning keyword arguments shared by ``SurfaceMasker`` and ``NiftiMasker``."""
        return {"detrend": bool(self.detrend), "standardize": self.standardize or False,
                "high_pass": None if self.high_pass is None else float(self.high_pass),
                "low_pass": None if self.low_pass is None else float(self.low_pass),
                "t_r": float(tr),
                "clean_args": {"filter": self.filter if (self.high_pass or self.low_pass) else False}}


def _to_dict(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        pass
    return dict(cfg)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _require(ok: bool, name: str, expected: str, got: Any) -> None:
    if not ok:
        raise BadInputError(f"Invalid setting {name}", expected, repr(got),
                            f"set {name} to one of the documented values (conf/ingest/default.yaml)")


@dataclass
class RunConfounds:
    """What cleaning needs from one run's confounds table.

    Attributes
    ----------
    regressors : DataFrame of shape (n_frames, n_regressors) or None
        Demeaned regressors; None without a confounds table or with an empty strategy.
    sample_mask : ndarray of shape (n_frames_kept,) or None
        Indices of the frames kept; None keeps every frame.
    n_rows : int or None
        Rows of the table (must equal the run's frames); None without a table.
    mean_fd : float
        Mean framewise displacement (mm) over the run; NaN when unavailable.
    """

    regressors: pd.DataFrame | None
    sample_mask: np.ndarray | None
    n_rows: int | None
    mean_fd: float

    def n_kept(self, n_frames: int) -> int:
        return n_frames if self.sample_mask is None else int(len(self.sample_mask))


NO_CONFOUNDS = RunConfounds(None, None, None, float("nan"))


def load_run_confounds(run: BoldRun, settings: IngestSettings) -> RunConfounds:
    """Select the run's regressors and kept frames as the settings ask.

    Raises
    ------
    BadInputError
        Unreadable table, columns the strategy needs but the table lacks, n/a values left.
    """
    if run.confounds is None:
        return NO_CONFOUNDS
    path = Path(run.confounds)
    try:
        raw = pd.read_csv(path, sep="\t")
    except Exception as exc:  # pandas raises several types for broken tables
        raise BadInputError(f"Cannot read the confounds table {path}", "a tab-separated fMRIPrep table",
                            exc.__class__.__name__, "re-run fMRIPrep for this run or remove the file") from exc
    fd = pd.to_numeric(raw["framewise_displacement"], errors="coerce") \
        if "framewise_displacement" in raw else pd.Series(dtype=float)
    mean_fd = float(np.nanmean(fd)) if fd.notna().any() else float("nan")
    kwargs = settings.confound_kwargs()
    with tempfile.TemporaryDirectory(prefix="pavi-confounds-") as tmp:
        images = _stage(run, path, Path(tmp))
        try:
            from nilearn.interfaces.fmriprep import load_confounds

            with warnings.catch_warnings():  # an empty strategy is allowed: frames are still selected
                warnings.filterwarnings("ignore", message="strategy is empty")
                warnings.filterwarnings("ignore", message="All volumes were marked as motion outliers")
                regressors, sample_mask = load_confounds(images, **kwargs)
        except (ValueError, KeyError) as exc:
            message = str(exc).replace("\n", " ").strip()
            missing = re.findall(r"'([^']+)'", message.split("missing", 1)[1]) if "missing" in message else []
            if missing:
                message = f"missing columns {', '.join(missing[:4])}" + \
                    (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
            message = message[:200]
            raise BadInputError(f"Confounds table {path.name} does not fit ingest.strategy={list(settings.strategy)}",
                                "the columns that strategy needs (fMRIPrep >= 1.2 names)", message,
                                "choose a smaller strategy or model (e.g. ingest.motion=basic) or "
                                "re-run fMRIPrep") from exc
    if regressors is not None and regressors.shape[1] == 0:
        regressors = None
    if sample_mask is not None and len(sample_mask) < settings.min_frames:
        # too few frames left: the caller reports that, and the regressors of a run without
        # frames are not worth checking (nilearn leaves them undefined)
        return RunConfounds(None, np.asarray(sample_mask, dtype=int), len(raw), mean_fd)
    if regressors is not None and not np.isfinite(regressors.to_numpy(dtype=float)).all():
        bad = [c for c in regressors if not np.isfinite(regressors[c].to_numpy(dtype=float)).all()]
        raise BadInputError(f"Confounds table {path.name} has n/a or infinite values",
                            "finite values in every selected column (n/a only in row 1 of derivatives)",
                            f"non-finite values in {', '.join(bad[:5])}", "re-run fMRIPrep for this run")
    return RunConfounds(regressors, None if sample_mask is None else np.asarray(sample_mask),
                        len(raw), mean_fd)


def _stage(run: BoldRun, table: Path, folder: Path) -> str | list[str]:
    """Show the table to ``load_confounds`` under canonical names; return the image name(s)."""
    stem = run.key
    _link(table, folder / f"{stem}_desc-confounds_timeseries.tsv")
    sidecar = table.with_suffix(".json")
    if sidecar.is_file():
        _link(sidecar, folder / f"{stem}_desc-confounds_timeseries.json")
    if run.is_surface:
        return [str(folder / f"{stem}_hemi-{h}_space-{run.space}_bold.func.gii") for h in "LR"]
    return str(folder / f"{stem}_space-{run.space}_desc-preproc_bold.nii.gz")


def _link(source: Path, target: Path) -> None:
    try:
        os.symlink(source.resolve(), target)
    except OSError:
        shutil.copyfile(source, target)
