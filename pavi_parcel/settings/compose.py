"""Compose the run configuration from ``conf/`` and command-line overrides.

Configs are data: Hydra groups mirror the stages (data, ingest, fingerprints, model, fit,
export). This module turns command-line options and ``KEY=VALUE`` overrides into one
resolved :class:`omegaconf.DictConfig`, and turns Hydra's errors into one-line messages.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from pavi_parcel.exceptions import BadInputError, BadInputErrors

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
SURFACE_SPACES = ("fsaverage5",)
VOLUME_DATA_GROUP = "mni152"
STAGES = ("ingest", "fingerprints", "fit", "export")
FIT_METHODS = ("pavi_e", "pavi_f", "svi", "vbem")
CALIBRATIONS = ("consistency", "consistency_evidence", "none")
"""``model.calibration``: the reported maps' temperature on all logits, on the evidence alone, or none."""


def space_overrides(space: str | None) -> list[str]:
    """Hydra overrides that select the data group for a ``--space`` value."""
    if space is None:
        return []
    if space in SURFACE_SPACES:
        return [f"data={space}"]
    if space.startswith("fsaverage") or space.startswith("fsLR"):
        raise BadInputError(f"Unsupported surface space '{space}'", "fsaverage5 or a volume space such as "
                            "MNI152NLin2009cAsym", space, "resample the runs to fsaverage5 with fMRIPrep")
    return [f"data={VOLUME_DATA_GROUP}", f"data.space={space}"]


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides.

    Parameters
    ----------
    overrides : sequence of str
        ``KEY=VALUE`` strings in Hydra syntax (``model.n_networks=7``, ``data=mni152``).

    Returns
    -------
    DictConfig
        The composed config (not yet validated for missing mandatory values).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _check_override_syntax(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        unknown = re.search(r"Could not override '([^']+)'|Key '([^']+)' is not in struct", str(exc))
        if unknown:
            key = unknown.group(1) or unknown.group(2)
            raise BadInputError(f"Unknown configuration key '{key}'", "a key from conf/ (model.n_networks, "
                                "fit.max_steps, ingest.fd_threshold ...; see conf/*/*.yaml)", repr(key),
                                "check the spelling, or write +KEY=VALUE to add a new key") from exc
        raise BadInputError("Invalid configuration override", "KEY=VALUE with a key from conf/ "
                            "(see `pavi-parcel fit --help`)", _first_line(exc),
                            "fix the key or use +KEY=VALUE to add a new one") from exc
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Check the values Hydra cannot type-check; every problem is reported at once.

    Raises
    ------
    BadInputErrors
        One entry per invalid value (type, range or choice), each naming the key.
    """
    errors = config_problems(cfg)
    if errors:
        raise BadInputErrors(errors)


def config_problems(cfg: DictConfig) -> list[BadInputError]:
    """Every invalid value of a composed config, as a list of :class:`BadInputError` (empty if valid)."""
    errors: list[BadInputError] = []

    def need(ok: bool, key: str, expected: str, got: Any, example: str) -> None:
        if not ok:
            errors.append(BadInputError(f"Invalid {key}", expected, repr(got), f"set {key}={example}"))

    model, fit = cfg.get("model") or {}, cfg.get("fit") or {}
    k = model.get("n_networks")
    need(_is_int(k) and k >= 2, "model.n_networks", "an integer K >= 2", k, "17 (or --n-networks 17)")
    need(_is_int(cfg.get("seed")) and cfg.get("seed") >= 0, "seed", "an integer >= 0", cfg.get("seed"), "0")
    device = str(cfg.get("device"))
    need(device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", device) is not None, "device",
         "auto, cpu, cuda or cuda:N", cfg.get("device"), "auto (or --device cpu)")
    n_jobs = cfg.get("n_jobs")
    need(_is_int(n_jobs) and n_jobs != 0, "n_jobs", "a non-zero integer (-1 = every core)", n_jobs, "2")
    need(cfg.get("stop_after") in (None,) + STAGES, "stop_after", "null or one of " + ", ".join(STAGES),
         cfg.get("stop_after"), "fingerprints (or --stop-after fit)")
    need(isinstance(cfg.get("force", False), bool), "force", "true or false", cfg.get("force"), "true")
    space = (cfg.get("data") or {}).get("space")
    need(isinstance(space, str) and re.fullmatch(r"[A-Za-z0-9]+(:[a-z]+-[A-Za-z0-9]+)*", space) is not None,
         "data.space", "a BIDS space label such as fsaverage5 or MNI152NLin2009cAsym", space, "fsaverage5")

    fp = cfg.get("fingerprints") or {}
    frac = fp.get("top_fraction", 0.1)
    need(_is_number(frac) and 0 <= frac < 1, "fingerprints.top_fraction", "a fraction in [0, 1) (0 = continuous)",
         frac, "0.1")
    spacing = fp.get("seed_spacing_mm", 12.0)
    need(_is_number(spacing) and spacing > 0, "fingerprints.seed_spacing_mm", "a length in mm > 0", spacing, "12")

    method = fit.get("method", "pavi_e")
    need(method in FIT_METHODS, "fit.method", "one of " + ", ".join(FIT_METHODS), method, "pavi_e")
    for key, low, example in (("batch_subjects", 1, "4"), ("batch_vertices", 1, "4096"), ("max_steps", 1, "5000"),
                              ("checkpoint_every", 1, "200"), ("min_epochs", 0, "3"), ("init_subjects", 1, "50"),
                              ("encoding_dim", 1, "8"), ("refine_steps", 0, "2"), ("posterior_passes", 0, "1"),
                              ("max_iter", 1, "50")):
        if key in fit:
            need(_is_int(fit[key]) and fit[key] >= low, f"fit.{key}", f"an integer >= {low}", fit[key], example)
    for key, example in (("lr", "0.02"), ("lr_concentration", "0.02"), ("max_minutes", "60")):
        if key in fit:
            need(_is_number(fit[key]) and fit[key] > 0, f"fit.{key}", "a number > 0", fit[key], example)
    for key, example in (("tol", "1e-4"), ("memory_budget_gb", "2.0")):
        if key in fit:
            need(_is_number(fit[key]) and fit[key] >= 0, f"fit.{key}", "a number >= 0", fit[key], example)
    beta = model.get("potts_beta", 0.0)
    need(_is_number(beta) and beta >= 0, "model.potts_beta", "a number >= 0 (0 = off)", beta, "0.0")
    for key in ("kappa_init", "sigma_init", "eps_init", "theta_prior"):
        value = model.get(key, "auto")
        need(value == "auto" or (_is_number(value) and value > 0), f"model.{key}", "auto or a number > 0",
             value, "auto")
    need(model.get("theta_input", "loo") in ("loo", "vb"), "model.theta_input", "loo or vb",
         model.get("theta_input"), "loo")
    need(model.get("calibration", "consistency") in CALIBRATIONS, "model.calibration", ", ".join(CALIBRATIONS),
         model.get("calibration"), "consistency")

    export = cfg.get("export") or {}
    need(export.get("format", "auto") in ("auto", "gifti", "nifti"), "export.format", "auto, gifti or nifti",
         export.get("format"), "auto")
    need(export.get("uncertainty", "entropy") in ("entropy", "none"), "export.uncertainty", "entropy or none",
         export.get("uncertainty"), "entropy")

    if cfg.get("ingest") is not None:
        from pavi_parcel.ingest.confounds import IngestSettings

        try:
            IngestSettings.from_config(cfg.ingest)
        except BadInputError as exc:
            errors.append(exc)
        except (TypeError, ValueError) as exc:
            errors.append(BadInputError("Invalid ingest setting", "values of the documented types "
                                        "(conf/ingest/default.yaml)", _first_line(exc),
                                        "check the ingest.* overrides"))
    return errors


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML text (what is saved next to results)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def _check_override_syntax(overrides: Sequence[str]) -> None:
    for item in overrides:
        if "=" not in item.lstrip("+~"):
            raise BadInputError(f"Cannot parse argument '{item}'", "KEY=VALUE overrides after BIDS_DIR OUT_DIR",
                                item, "write it as KEY=VALUE, e.g. model.n_networks=7")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else exc.__class__.__name__
