"""Compose the run configuration from ``conf/`` and command-line overrides.

Configs are data: Hydra groups mirror the stages (data, ingest, fingerprints, model, fit,
export). This module turns command-line options and ``KEY=VALUE`` overrides into one
resolved :class:`omegaconf.DictConfig`, and turns Hydra's errors into one-line messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from .exceptions import BadInputError

CONF_DIR = Path(__file__).parent / "conf"
SURFACE_SPACES = ("fsaverage5",)
VOLUME_DATA_GROUP = "mni152"


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
        raise BadInputError("Invalid configuration override", "KEY=VALUE with a key from conf/ "
                            "(see `pavi-parcel fit --help`)", _first_line(exc),
                            "fix the key or use +KEY=VALUE to add a new one") from exc
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Check values that Hydra cannot type-check; raise :class:`BadInputError` on the first problem."""
    k = cfg.model.get("n_networks")
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise BadInputError("Invalid model.n_networks", "an integer K >= 2", repr(k),
                            "set model.n_networks=17 (or --n-networks 17)")
    if not isinstance(cfg.seed, int):
        raise BadInputError("Invalid seed", "an integer", repr(cfg.seed), "set seed=0")
    device = str(cfg.device)
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise BadInputError("Invalid device", "auto, cpu, cuda or cuda:N", device, "use --device auto")


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
    return text[0] if text else exc.__class__.__name__
