"""A sweep's Hydra overrides: the job folders' layout, the settings every job shares, early checks.

:func:`sweep_overrides` turns the user's ``KEY=VALUE`` list into the full list a Hydra multirun
needs; :func:`validate_overrides` composes every swept value once, so a misspelt key fails
before anything is launched (:mod:`.sweep` runs the sweep).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.settings.compose import CONF_DIR

SHARED_KEYS = ("bids_dir", "out_dir", "work_dir", "participant_label", "device", "n_jobs", "force")
"""Settings shared by every job of a sweep: never swept, left out of job folder names."""

CONFIG_DIR = str(CONF_DIR)
"""The config root (``config.yaml`` and its groups); a folder, as ``conf`` is no Python package."""

_FOLDER_KEYS = ("bids_dir", "out_dir", "work_dir")
_LAYOUT_PREFIXES = ("hydra/output=", "hydra.job.", "hydra.job_logging.", "++hydra.job_logging.", "hydra.sweep.")


def sweep_overrides(overrides: Sequence[str], base: Mapping[str, Any] | None = None) -> list[str]:
    """The full list of Hydra overrides of a sweep: output layout, shared settings, the user's.

    Parameters
    ----------
    overrides : sequence of str
        ``KEY=VALUE`` overrides, sweeps included (``model.n_networks=7,17``), launcher choices
        (``hydra/launcher=slurm``, ``hydra.launcher.partition=gpu``), and possibly the
        folders (``bids_dir=...``, ``out_dir=...``), which win over ``base``.
    base : mapping, optional
        Settings shared by every job, by key (``bids_dir``, ``out_dir``, ``participant_label``
        ...), as Python values (str, Path, number, bool, None, list).

    Returns
    -------
    list of str
        Folders absolute; ``work_dir`` defaults to ``OUT_DIR/work``. Job folders are named by
        the swept keys only; without a sweep, by the other overrides; without any, ``0``.
    """
    shared, rest = shared_settings(overrides, base or {})
    given = {override_key(o) for o in rest}
    values = [f"{key}={_hydra_value(value)}" for key, value in shared.items() if key not in given]
    layout = [
        "hydra/output=pavi",
        "hydra.job.chdir=false",
        "hydra.job_logging.handlers.file.filename=${hydra.runtime.output_dir}/.hydra/${hydra.job.name}.log",
        "++hydra.job_logging.handlers.file.delay=true",  # opened at the first record, once .hydra/ exists
    ]
    named, constant = _swept_and_constant_keys(rest)
    if not named and not constant:
        layout.append("hydra.sweep.subdir=${hydra.job.num}")
    exclude = list(SHARED_KEYS) + (constant if named else [])
    layout.append("hydra.job.config.override_dirname.exclude_keys=[" + ",".join(exclude) + "]")
    return [*layout, *values, *rest]


def _swept_and_constant_keys(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """Keys of the job-level overrides that are swept, and of those given one value."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return [], []  # reported by validate_overrides
    named, constant = [], []
    for ov in parsed:
        if not ov.key_or_group.startswith("hydra") and ov.key_or_group not in SHARED_KEYS:
            (named if ov.is_sweep_override() else constant).append(ov.key_or_group)
    return named, constant


def shared_settings(overrides: Sequence[str], base: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Folders from ``base`` and ``overrides`` (made absolute), and the other overrides."""
    shared, rest = dict(base), []
    parser = OverridesParser.create()
    for text in overrides:
        if override_key(text) in _FOLDER_KEYS and text[:1] not in "+~":
            try:
                override = parser.parse_override(text)
            except HydraException as exc:
                key = override_key(text)
                raise BadInputError(f"Override '{text}' does not parse", f"{key}=PATH", one_line(exc),
                                    f"quote paths with spaces or commas: {key}='PATH'") from None
            if not override.is_sweep_override():
                shared[override.key_or_group] = override.value()
                continue
        rest.append(text)
    if shared.get("out_dir") in (None, ""):
        raise BadInputError("No output folder for the sweep", "OUT_DIR", "none", "give OUT_DIR")
    shared["out_dir"] = Path(str(shared["out_dir"])).expanduser().absolute()
    if shared.get("bids_dir") not in (None, ""):
        shared["bids_dir"] = Path(str(shared["bids_dir"])).expanduser().absolute()
    work = shared.get("work_dir")
    shared["work_dir"] = Path(str(work)).expanduser().absolute() if work else shared["out_dir"] / "work"
    return shared, rest


def override_key(text: str) -> str:
    return text.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def _hydra_value(value: Any) -> str:
    """Python value -> Hydra override value text (strings quoted)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def validate_overrides(overrides: Sequence[str], config_dir: str | Path | None = None) -> int:
    """Check a sweep's overrides before launching anything; return its number of jobs.

    Every value of every swept key is composed once (others at their first value), so a
    misspelt key, a missing config group option or a bad launcher setting fails here with
    one message, not in a job on the cluster. Values are checked by the pipeline itself.

    Raises
    ------
    BadInputError
        An override does not parse, names no setting, or sweeps a shared setting.
    """
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise BadInputError("An override does not parse", "KEY=VALUE, a sweep KEY=A,B or GROUP=OPTION "
                            "(Hydra syntax)", one_line(exc), "quote values with spaces or commas, "
                            "e.g. KEY='a,b'") from None
    n_jobs, first, variants = 1, [], []
    for ov in parsed:
        if not ov.is_sweep_override():
            first.append(ov.input_line)
            continue
        key = ov.get_key_element()
        if ov.key_or_group in SHARED_KEYS:
            raise BadInputError(f"Override '{ov.input_line}' sweeps a setting shared by all jobs",
                                f"one value for each of {', '.join(SHARED_KEYS)}", "several values",
                                "run one sweep per value, or sweep model/fit settings instead")
        try:
            values = list(ov.sweep_string_iterator())
        except HydraException:
            values = []  # glob sweeps: left to Hydra
        n_jobs *= max(len(values), 1)
        variants += [(len(first), f"{key}={value}") for value in values[1:]]
        first.append(f"{key}={values[0]}" if values else "")
    trials = [first] + [first[:i] + [text] + first[i + 1:] for i, text in variants]
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir or CONFIG_DIR), version_base="1.3"):
        for trial in trials:
            trial = [o for o in trial if o]
            try:
                compose(config_name="config", overrides=trial, return_hydra_config=True)
            except HydraException as exc:
                shown = [o for o in trial if not o.startswith(_LAYOUT_PREFIXES)]
                shown = [o for o in shown if override_key(o) not in SHARED_KEYS] or shown
                raise BadInputError("Invalid override in: " + " ".join(shown),
                                    "existing keys and config group options",
                                    one_line(exc).split(" Config search path")[0],
                                    "check the spelling against pavi_parcel/conf/ "
                                    "(add a new key with +KEY=VALUE)") from None
    return n_jobs


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
