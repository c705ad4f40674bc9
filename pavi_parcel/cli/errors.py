"""How the command line reports errors: one line on stderr and an exit code, with its own flag names.

Library messages name settings and parameters as a Python user writes them (``model.n_networks``,
``refine_steps``); :func:`for_command_line` rewrites them into the options of the command that
was run (``--n-networks``, ``--refine-steps``), so each audience reads its own vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pavi_parcel.exceptions import BadInputError, BadInputErrors

#: setting or parameter -> option, per command (only where the command has that option)
FLAGS: dict[str, dict[str, str]] = {
    "fit": {"model.n_networks": "--n-networks", "data.space": "--space", "model.prior": "--prior",
            "device": "--device", "stop_after": "--stop-after", "participant_label": "--participant-label"},
    "apply": {"participant_label": "--participant-label", "refine_steps": "--refine-steps", "n_jobs": "--n-jobs",
              "OUT_DIR=": "OUT_DIR ", "BIDS_DIR=": "BIDS_DIR "},
    "export": {"export.format": "--format", "export.reference": "--reference", "fmt": "--format",
               "reference": "--reference"},
    "validate": {"truth_dir": "--truth", "heldout_dir": "--heldout"},
    "simulate": {"n_subjects": "--n-subjects", "n_sessions": "--n-sessions", "n_runs": "--n-runs",
                 "n_frames": "--n-frames", "n_networks": "--n-networks", "space": "--space"},
}


def for_command_line(text: str, flags: Mapping[str, str], bare: bool = True) -> str:
    """``text`` with settings replaced by the options that set them: ``set model.n_networks=17`` ->
    ``set --n-networks 17``; a bare ``model.n_networks`` -> ``--n-networks``.

    Keys are matched as whole words (not inside paths or longer names); a key that is also an
    English word (``device``, ``space``) only in its ``KEY=VALUE`` form. ``KEY=[a,b]`` lists are
    written as space-separated values, as the options take them. ``bare=False`` rewrites only
    ``KEY=VALUE`` forms (advice), leaving keys that merely name a setting as they are.
    """
    for key, flag in sorted(flags.items(), key=lambda kv: -len(kv[0])):
        if key.endswith("="):
            text = text.replace(key, flag)
            continue
        value_part = "(=(\\[[^\\]]*\\]|[^\\s,;)]+))" + ("?" if bare and ("." in key or "_" in key) else "")
        pattern = re.compile(rf"(?<![\w./-]){re.escape(key)}{value_part}(?![\w/-])")

        def swap(match: re.Match, flag: str = flag) -> str:
            value = match.group(2)
            if value is None:
                return flag
            if value.startswith("[") and value.endswith("]"):
                value = " ".join(v.strip() for v in value[1:-1].split(",") if v.strip())
            return f"{flag} {value}"

        text = pattern.sub(swap, text)
    return text


#: commands whose ``KEY=VALUE`` overrides are settings: the "what" of their messages keeps the key the
#: user may have typed (``Invalid model.n_networks``), the rest is written with the command's options
TAKES_OVERRIDES = ("fit",)


def _translated(error: BadInputError, command: str | None) -> str:
    flags = FLAGS.get(command or "", {})
    if command in TAKES_OVERRIDES:
        return BadInputError(error.what, for_command_line(error.expected, flags),
                             for_command_line(error.got, flags, bare=False), for_command_line(error.fix, flags)).message
    return for_command_line(error.message, flags)


def error_line(exc: BadInputError, command: str | None) -> str:
    """The message of a bad-input error for the command line (several problems: one line each)."""
    errors = exc.errors if isinstance(exc, BadInputErrors) else [exc]
    if len(errors) > 1:
        lines = [f"{len(errors)} input problems found:"]
        lines += [f"  {i}. {_translated(e, command)}" for i, e in enumerate(errors, 1)]
        return "\n".join(lines)
    return _translated(errors[0], command)


__all__ = ["FLAGS", "error_line", "for_command_line"]
