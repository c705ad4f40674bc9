"""Compose the settings of a run from ``conf/`` and ``KEY=VALUE`` overrides.

Configs are data: Hydra groups mirror the stages (data, ingest, fingerprints, model, fit,
export). :func:`compose` runs Hydra's composition, turns its errors into one-line messages and
hands the result to the schema (:mod:`.schema`), which checks every value once. This module and
:func:`settings_from_config` (for ``@hydra.main`` sweep jobs) are the only places that see a
Hydra ``DictConfig``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from pavi_parcel.exceptions import BadInputError

from .schema import RunSettings, run_settings

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_.\-/]*")


def quote_override(value: str) -> str:
    """Quote a string for a Hydra override so that Hydra reads it back unchanged.

    Plain names and paths stay as they are; anything else (spaces, commas, brackets, values
    Hydra would read as numbers, booleans or null) is single-quoted with escapes.
    """
    if _PLAIN.fullmatch(value) and value.lower() not in ("null", "true", "false", "nan", "inf"):
        return value
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def compose_config(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``conf/config.yaml`` composed with Hydra overrides, as plain data (not yet checked).

    Raises
    ------
    BadInputError
        An override Hydra cannot parse or apply (unknown key, unknown group option).
    """
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
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
                                "check the spelling of the override") from exc
        raise BadInputError("Invalid configuration override", "KEY=VALUE with a key from conf/ "
                            "(see `pavi-parcel fit --help`)", _first_line(exc),
                            "fix the key or the value") from exc
    return OmegaConf.to_container(cfg, resolve=True)


def compose(overrides: Sequence[str] = ()) -> RunSettings:
    """The checked settings of a run: ``conf/`` composed with Hydra overrides.

    Parameters
    ----------
    overrides : sequence of str
        ``KEY=VALUE`` strings in Hydra syntax (``model.n_networks=7``, ``data=mni152``).

    Returns
    -------
    RunSettings

    Raises
    ------
    BadInputErrors
        Every invalid, unknown or missing value at once, each naming its key.
    """
    return run_settings(compose_config(overrides))


def settings_from_config(cfg: Any) -> RunSettings:
    """The checked settings of a Hydra ``DictConfig`` (a ``@hydra.main`` job)."""
    from omegaconf import OmegaConf

    return run_settings(OmegaConf.to_container(cfg, resolve=True))


def to_yaml(settings: RunSettings) -> str:
    """The settings as YAML text (what is saved next to results), keys in schema order."""
    return yaml.safe_dump(settings.to_dict(), sort_keys=False, default_flow_style=False)


def load_settings(path: Path) -> RunSettings:
    """Settings saved by :func:`to_yaml` (``model/config.yaml``); keys of other versions are ignored.

    Raises
    ------
    BadInputError
        An unreadable file or invalid values.
    """
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise BadInputError(f"Cannot read the saved settings {path}", "a config.yaml written by pavi-parcel",
                            exc.__class__.__name__, "rerun `pavi-parcel fit` to rewrite it") from exc
    return run_settings(data, ignore_unknown=True)


def saved_settings(out_dir: Path) -> RunSettings | None:
    """The settings saved in ``OUT_DIR/model/config.yaml``, or None when there are none (or unreadable ones).

    For provenance (sidecars, report) where a missing config is not an error.
    """
    path = Path(out_dir) / "model" / "config.yaml"
    if not path.is_file():
        return None
    try:
        return load_settings(path)
    except BadInputError:
        return None


def _check_override_syntax(overrides: Sequence[str]) -> None:
    for item in overrides:
        if "=" not in item.lstrip("+~"):
            raise BadInputError(f"Cannot parse argument '{item}'", "KEY=VALUE overrides after BIDS_DIR OUT_DIR",
                                item, "write it as KEY=VALUE, e.g. model.n_networks=7")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else exc.__class__.__name__


__all__ = ["CONF_DIR", "compose", "quote_override", "compose_config", "load_settings", "saved_settings",
           "settings_from_config", "to_yaml"]
