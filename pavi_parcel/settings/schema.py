"""The settings of a run, one typed, frozen dataclass per stage: every default once, every rule with it.

The YAML files of ``conf/`` are the user-facing, commented view of these classes (a test keeps
them in step); Hydra composes them with the command line's overrides, and
:func:`pavi_parcel.settings.compose.compose` turns the result into a :class:`RunSettings`, the
only form of the settings the stages see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pavi_parcel.exceptions import BadInputError

from .rules import (
    NONE,
    AnyOf,
    Boolean,
    Folder,
    Integer,
    Labels,
    ListOf,
    Options,
    Real,
    Text,
    build,
    check_fields,
    invalid,
    setting,
    to_plain,
)

STAGES = ("ingest", "fingerprints", "fit", "export")
"""``stop_after`` choices, in pipeline order."""
FIT_METHODS = ("pavi_e", "pavi_f", "svi", "vbem")
CALIBRATIONS = ("consistency", "consistency_evidence", "none")
SESSION_SPLITS = ("auto", "none", "halves", "runs")  # fingerprints.split (pavi_parcel.fingerprints.split)
"""``model.calibration``: the reported maps' temperature on all logits, on the evidence alone, or none."""
CONFOUND_GROUPS = ("motion", "wm_csf", "global_signal", "compcor", "high_pass", "scrub", "non_steady_state")
CONFOUND_MODELS = ("basic", "derivatives", "power2", "full")
COMPCOR = ("anat_combined", "anat_separated", "temporal", "temporal_anat_combined", "temporal_anat_separated")
STANDARDIZE = ("zscore_sample", "zscore", "psc")
SPACE_LABEL = r"[A-Za-z0-9]+(:[a-z]+-[A-Za-z0-9]+)*"

AUTO = Options(("auto",))
POSITIVE = Real(0.0, low_open=True)
NONNEGATIVE = Real(0.0)
AUTO_OR_POSITIVE = AnyOf((AUTO, POSITIVE), "auto or a number > 0")
AUTO_OR_NONNEGATIVE = AnyOf((AUTO, NONNEGATIVE), "auto or a number >= 0")
OPTIONAL_TEXT = AnyOf((NONE, Text()), "null or a string")


class Settings:
    """Shared behaviour of the settings classes: checked construction, plain data, replacement.

    Constructing a settings class checks every field against its rule (and converts it: lists
    become tuples, paths absolute ``Path`` objects), whether the values come from the command
    line, a saved config or Python code; ``PREFIX`` is the dotted prefix of its keys in messages.
    """

    PREFIX = ""

    def __post_init__(self) -> None:
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (dicts, lists, str paths), as saved in ``model/config.yaml``."""
        return to_plain(self)

    def replace(self, **changes: Any):
        """A copy with ``changes`` (validated like any other input)."""
        return build(type(self), {**self.to_dict(), **changes})

    def problems(self) -> list[BadInputError]:
        """Constraints between fields (none by default)."""
        return []

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass(frozen=True)
class DataSettings(Settings):
    """Which runs of the dataset are used (``conf/data/*.yaml``)."""

    PREFIX = "data."

    space: str = setting("auto", Text(SPACE_LABEL, "auto or a BIDS space label such as fsaverage5, fsLR or "
                                                   "MNI152NLin2009cAsym[:res-2]"))
    task: str | None = setting(None, OPTIONAL_TEXT, "rest")
    sessions: tuple[str, ...] | None = setting(None, AnyOf((NONE, Labels()), "null or a list of session labels"),
                                               "['01']")
    mesh_dir: Path | None = setting(None, AnyOf((NONE, Folder()), "null or a folder"),
                                    "$SUBJECTS_DIR/fsaverage6")


@dataclass(frozen=True)
class IngestSettings(Settings):
    """Masking and cleaning of every BOLD run (``conf/ingest/default.yaml``)."""

    PREFIX = "ingest."

    strategy: tuple[str, ...] = setting(("motion", "wm_csf", "high_pass", "scrub"),
                                        ListOf(Options(CONFOUND_GROUPS), "a list of " + ", ".join(CONFOUND_GROUPS)),
                                        "[motion,wm_csf,high_pass,scrub]")
    motion: str = setting("full", Options(CONFOUND_MODELS))
    wm_csf: str = setting("basic", Options(CONFOUND_MODELS))
    global_signal: str = setting("basic", Options(CONFOUND_MODELS))
    compcor: str = setting("anat_combined", Options(COMPCOR))
    n_compcor: int | str = setting("all", AnyOf((Options(("all",)), Integer(1)), "all or an integer >= 1"))
    scrub: int = setting(5, Integer(0))
    fd_threshold: float = setting(0.5, POSITIVE)
    std_dvars_threshold: float = setting(1.5, POSITIVE)
    detrend: bool = setting(True, Boolean())
    standardize: str | bool = setting("zscore_sample", Options((*STANDARDIZE, False)))
    filter: str | bool = setting("cosine", Options(("cosine", "butterworth", False)))
    high_pass: float | None = setting(0.01, AnyOf((NONE, POSITIVE), "a frequency in Hz > 0 or null"))
    low_pass: float | None = setting(None, AnyOf((NONE, POSITIVE), "a frequency in Hz > 0 or null"))
    min_frames: int = setting(50, Integer(3))
    on_missing_confounds: str = setting("warn", Options(("warn", "error")))

    def problems(self) -> list[BadInputError]:
        if self.low_pass is not None and self.filter != "butterworth":
            return [invalid(self.PREFIX + "low_pass", "null unless ingest.filter=butterworth (the cosine filter is "
                            "high-pass only)", self.low_pass, "null")]
        return []


@dataclass(frozen=True)
class QCSettings(Settings):
    """Per-run quality gates (``conf/qc/default.yaml``); ``ingest.min_frames`` is the frames gate."""

    PREFIX = "qc."

    max_mean_fd: float = setting(0.5, POSITIVE, "0.3")
    min_vertex_fraction: float = setting(0.9, Real(0.0, high=1.0, text="a fraction in [0, 1)"))
    min_tsnr: float = setting(5.0, NONNEGATIVE, "10")
    on_exclusion: str = setting("exclude", Options(("exclude", "error")))


@dataclass(frozen=True)
class FingerprintSettings(Settings):
    """Connectivity fingerprints (``conf/fingerprints/default.yaml``)."""

    PREFIX = "fingerprints."

    seeds: str = setting("auto", AUTO)
    seed_spacing_mm: float = setting(12.0, Real(0.0, low_open=True, text="a length in mm > 0"), "12")
    top_fraction: float = setting(0.1, Real(0.0, high=1.0, text="a fraction in [0, 1) (0 = continuous)"))
    split: str = setting("auto", Options(SESSION_SPLITS))


@dataclass(frozen=True)
class ModelSettings(Settings):
    """The hierarchical model (``conf/model/mshbm.yaml``)."""

    PREFIX = "model."

    n_networks: int = setting(17, Integer(2, text="an integer K >= 2"), "17")
    kappa_init: float | str = setting("auto", AUTO_OR_POSITIVE)
    learn_kappa: bool = setting(True, Boolean())
    sigma_init: float | str = setting("auto", AUTO_OR_POSITIVE)
    learn_sigma: bool = setting(True, Boolean())
    eps_init: float | str = setting("auto", AUTO_OR_POSITIVE)
    learn_eps: bool = setting(True, Boolean())
    theta_prior: float | str = setting("auto", AUTO_OR_POSITIVE)
    prior: str | None = setting(None, OPTIONAL_TEXT, "yeo17")
    prior_floor: float = setting(0.2, Real(0.0, high=1.0, text="a probability in [0, 1)"))
    theta_input: str = setting("loo", Options(("loo", "vb")))
    theta_counts: str = setting("posterior", Options(("posterior", "likelihood")))
    potts_beta: float | str = setting("auto", AUTO_OR_NONNEGATIVE, "0.5")
    encoder_iterations: int = setting(2, Integer(1))
    calibration: str = setting("consistency", Options(CALIBRATIONS))
    nested: bool = setting(False, Boolean(), "true")

    @property
    def atlas_prior(self) -> str | None:
        """``prior``, or None without an atlas prior."""
        return None if self.prior in (None, "", "null", "None") else str(self.prior)


@dataclass(frozen=True)
class FitSettings(Settings):
    """Inference (``conf/fit/*.yaml``: presets of one schema, one per method)."""

    PREFIX = "fit."

    method: str = setting("pavi_e", Options(FIT_METHODS))
    batch_subjects: int = setting(4, Integer(1))
    batch_vertices: int = setting(4096, Integer(1))
    lr: float = setting(0.02, POSITIVE)
    lr_concentration: float = setting(0.02, POSITIVE)
    max_steps: int = setting(5000, Integer(1))
    max_minutes: float = setting(60.0, POSITIVE, "60")
    tol: float = setting(1e-4, NONNEGATIVE, "1e-4")
    min_epochs: int = setting(3, Integer(0))
    checkpoint_every: int = setting(200, Integer(1))
    memory_budget_gb: float = setting(2.0, NONNEGATIVE)
    init_subjects: int = setting(50, Integer(1))
    encoding_dim: int = setting(8, Integer(1))
    refine_steps: int = setting(2, Integer(0))
    posterior_passes: int = setting(1, Integer(0))
    calibration_subjects: int = setting(10, Integer(1))
    num_threads: int = setting(0, Integer(0))
    max_iter: int = setting(50, Integer(1))


@dataclass(frozen=True)
class ExportSettings(Settings):
    """Maps and report (``conf/export/default.yaml``)."""

    PREFIX = "export."

    format: str = setting("auto", Options(("auto", "gifti", "cifti", "nifti")))
    reference: str | None = setting(None, OPTIONAL_TEXT, "yeo17")
    uncertainty: str = setting("entropy", Options(("entropy", "none")))
    report: bool = setting(True, Boolean())


@dataclass(frozen=True)
class ConnectomeSettings(Settings):
    """Network time series and connectomes after the export (``conf/connectome/default.yaml``)."""

    PREFIX = "connectome."

    enabled: bool = setting(True, Boolean())
    weighting: str = setting("soft", Options(("soft", "hard")))
    alphas: int = setting(4, Integer(1))
    n_refinements: int = setting(4, Integer(1))
    max_iter: int = setting(100, Integer(1))


@dataclass(frozen=True)
class RunSettings(Settings):
    """One run of the pipeline (``conf/config.yaml`` and its groups)."""

    bids_dir: Path = setting("???", Folder(), "/data/ds/derivatives/fmriprep")
    out_dir: Path = setting("???", Folder(), "/data/pavi")
    work_dir: Path | None = setting(None, AnyOf((NONE, Folder()), "null or a path"))
    participant_label: tuple[str, ...] = setting((), Labels(), "[01,02]")
    seed: int = setting(0, Integer(0))
    device: str = setting("auto", Text(r"auto|cpu|cuda|cuda:\d+", "auto, cpu, cuda or cuda:N"))
    n_jobs: int = setting(2, Integer(exclude=(0,), text="a non-zero integer (-1 = every core)"))
    stop_after: str | None = setting(None, Options((None, *STAGES)), "fingerprints")
    force: bool = setting(False, Boolean(), "true")
    data: DataSettings = setting(DataSettings(), NONE)
    ingest: IngestSettings = setting(IngestSettings(), NONE)
    qc: QCSettings = setting(QCSettings(), NONE)
    fingerprints: FingerprintSettings = setting(FingerprintSettings(), NONE)
    model: ModelSettings = setting(ModelSettings(), NONE)
    fit: FitSettings = setting(FitSettings(), NONE)
    export: ExportSettings = setting(ExportSettings(), NONE)
    connectome: ConnectomeSettings = setting(ConnectomeSettings(), NONE)

    @property
    def work_folder(self) -> Path:
        """``work_dir``, or ``OUT_DIR/work`` by default."""
        return self.work_dir if self.work_dir is not None else self.out_dir / "work"



FIT_PRESETS: dict[str, dict[str, Any]] = {
    "pavi_e": {"method": "pavi_e"},
    "pavi_f": {"method": "pavi_f"},
    "svi": {"method": "svi"},
    "vbem": {"method": "vbem", "tol": 1e-6},
}
"""What each ``conf/fit/<method>.yaml`` changes from the :class:`FitSettings` defaults."""


def fit_preset(method: str, **changes: Any) -> FitSettings:
    """The settings of ``conf/fit/<method>.yaml`` (its preset), with ``changes``.

    Raises
    ------
    BadInputErrors
        An unknown method or invalid changes.
    """
    preset = FIT_PRESETS.get(method, {"method": method})
    return build(FitSettings, {**preset, **changes})


def run_settings(values: Mapping[str, Any], ignore_unknown: bool = False) -> RunSettings:
    """A :class:`RunSettings` from plain data (a composed config, a saved ``config.yaml``).

    Raises
    ------
    BadInputErrors
        Every invalid, unknown or missing value, each naming its key.
    """
    return build(RunSettings, values, ignore_unknown=ignore_unknown)


__all__ = ["CALIBRATIONS", "ConnectomeSettings",
           "DataSettings", "ExportSettings", "FIT_METHODS", "FIT_PRESETS", "FingerprintSettings",
           "FitSettings", "fit_preset", "IngestSettings", "ModelSettings", "QCSettings", "RunSettings", "STAGES",
           "Settings", "run_settings"]
