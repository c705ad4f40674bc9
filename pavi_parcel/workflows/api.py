"""``run_pipeline``: what ``pavi-parcel fit`` does, from Python; and the overrides both build.

::

    from pavi_parcel import run_pipeline
    run_pipeline("BIDS_DIR", "OUT_DIR", n_networks=17, participant_label=["01"], max_minutes=30)

Keywords are the options of ``pavi-parcel fit`` (``participant_label``, ``space``, ``n_networks``,
``prior``, ``device``, ``stop_after``) and any setting by its name (``potts_beta=0.5``,
``fd_threshold=0.4``, ``top_fraction=0.1``: each name belongs to one group of the schema) or by its
dotted key in ``overrides`` (``["fit=vbem", "model.theta_prior=2"]``, Hydra syntax).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from pavi_parcel.atlas.priors import prior_n_networks
from pavi_parcel.bids.discovery import AUTO
from pavi_parcel.exceptions import BadInputError
from pavi_parcel.settings.compose import compose, quote_override, saved_settings
from pavi_parcel.settings.schema import ConnectomeSettings, RunSettings
from pavi_parcel.spaces import space_named

from .pipeline import run

GROUPED = ("data", "ingest", "qc", "fingerprints", "model", "fit", "export", "connectome")


def _setting_groups() -> dict[str, str]:
    """Each setting name -> its dotted key (``potts_beta`` -> ``model.potts_beta``)."""
    keys: dict[str, str] = {}
    for f in fields(RunSettings):
        if f.name in GROUPED:
            for inner in fields(type(f.default_factory())):
                keys.setdefault(inner.name, f"{f.name}.{inner.name}")
        elif f.name not in ("bids_dir", "out_dir"):
            keys[f.name] = f.name
    return keys


def space_overrides(space: str | None) -> list[str]:
    """The override of ``data.space`` (``space=`` / ``--space``); an ``fs*`` name that is no known mesh is refused."""
    if space is None:
        return []
    if space != AUTO:
        space_named(space.partition(":")[0])
    return [f"data.space={quote_override(space)}"]


def prior_overrides(prior: str, n_networks: int | None) -> list[str]:
    """``model.prior`` (a path made absolute) and, unless ``n_networks`` is given, K from the atlas.

    An unreadable atlas adds no K: the validation pass reports it with every other problem.
    """
    path = Path(prior).expanduser()
    spec = str(path.resolve()) if path.exists() else prior
    items = [f"model.prior={quote_override(spec)}"]
    if n_networks is None:
        try:
            items.append(f"model.n_networks={prior_n_networks(spec)}")
        except BadInputError:
            pass
    return items


def pipeline_overrides(bids_dir: str | Path, out_dir: str | Path, participant_label: Sequence[str] | None = None,
                       space: str | None = None, n_networks: int | None = None, prior: str | None = None,
                       device: str | None = None, stop_after: str | None = None,
                       overrides: Sequence[str] = (), **settings: Any) -> list[str]:
    """The Hydra overrides of a fit: the folders and options first, then settings by name, then ``overrides``.

    Raises
    ------
    BadInputError
        A keyword that is no setting.
    """
    items = [f"bids_dir={quote_override(str(bids_dir))}", f"out_dir={quote_override(str(out_dir))}"]
    if participant_label:
        labels = [participant_label] if isinstance(participant_label, str) else list(participant_label)
        items.append("participant_label=[" + ",".join(quote_override(str(p)) for p in labels) + "]")
    items += space_overrides(space)
    if n_networks is not None:
        items.append(f"model.n_networks={int(n_networks)}")
    if prior is not None:
        items += prior_overrides(prior, n_networks)
    for key, value in (("device", device), ("stop_after", stop_after)):
        if value is not None:
            items.append(f"{key}={quote_override(value)}")
    keys = _setting_groups()
    unknown = sorted(set(settings) - set(keys))
    if unknown:
        raise BadInputError(f"Unknown setting {', '.join(unknown)}", "the name of a setting (potts_beta, "
                            "max_minutes, fd_threshold ...) or a dotted key in overrides", ", ".join(unknown),
                            "check the spelling (the schema: pavi_parcel.settings.schema)")
    items += [f"{keys[name]}={_value(value)}" for name, value in settings.items()]
    return items + list(overrides)


def _value(value: Any) -> str:
    """A Python value as a Hydra override value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_value(v) for v in value) + "]"
    if isinstance(value, (int, float)):
        return repr(value)
    return quote_override(str(value))


def run_pipeline(bids_dir: str | Path, out_dir: str | Path, participant_label: Sequence[str] | None = None,
                 space: str | None = None, n_networks: int | None = None, prior: str | None = None,
                 device: str | None = None, stop_after: str | None = None, overrides: Sequence[str] = (),
                 **settings: Any) -> Path:
    """Ingest, fingerprint, fit and export a cohort: what ``pavi-parcel fit BIDS_DIR OUT_DIR`` does.

    Parameters
    ----------
    bids_dir : str or Path
        fMRIPrep derivatives (or a raw BIDS dataset holding them under ``derivatives/``).
    out_dir : str or Path
        The output BIDS-derivatives folder; rerunning resumes an interrupted run.
    participant_label : sequence of str, optional
        Participants (with or without ``sub-``); all by default.
    space, n_networks, prior, device, stop_after : optional
        As the options of ``pavi-parcel fit``.
    overrides : sequence of str
        Hydra overrides, ``KEY=VALUE``.
    **settings
        Any setting by its name (``max_minutes=30``).

    Returns
    -------
    Path
        OUT_DIR.

    Raises
    ------
    BadInputErrors
        Every input problem at once, before anything is written.
    """
    return run(compose(pipeline_overrides(bids_dir, out_dir, participant_label, space, n_networks, prior, device,
                                          stop_after, overrides, **settings)))


def connectome_settings(out_dir: str | Path, overrides: Sequence[str] = ()) -> ConnectomeSettings:
    """The connectome settings of a fitted run (``model/config.yaml``) with ``connectome.KEY=VALUE`` overrides.

    Raises
    ------
    BadInputError
        An override that is not ``connectome.KEY=VALUE``; BadInputErrors for invalid values.
    """
    import yaml

    saved = saved_settings(Path(out_dir))
    base = saved.connectome if saved is not None else ConnectomeSettings()
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = str(item).partition("=")
        if not sep or not key.startswith(ConnectomeSettings.PREFIX):
            raise BadInputError(f"Invalid connectome override {item!r}", "connectome.KEY=VALUE", repr(item),
                                "pass e.g. connectome.weighting=hard")
        changes[key[len(ConnectomeSettings.PREFIX):]] = yaml.safe_load(value)
    return base.replace(**changes) if changes else base


__all__ = ["connectome_settings", "pipeline_overrides", "prior_overrides", "run_pipeline", "space_overrides"]
