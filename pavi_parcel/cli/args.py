"""Command-line arguments: BIDS-App multi-value options, and values quoted for Hydra overrides."""

from __future__ import annotations

import re

MULTI_VALUE_OPTIONS = ("--participant-label", "--participant_label")

_PLAIN = re.compile(r"[A-Za-z_/.][A-Za-z0-9_.\-/]*")


def quote(value: str) -> str:
    """Quote a string for a Hydra override so that Hydra reads it back unchanged.

    Plain names and paths stay as they are; anything else (spaces, commas, brackets, values
    Hydra would read as numbers, booleans or null) is single-quoted with escapes.
    """
    if _PLAIN.fullmatch(value) and value.lower() not in ("null", "true", "false", "nan", "inf"):
        return value
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def expand_multi_value_options(argv: list[str]) -> list[str]:
    """Let ``--participant-label 01 02 sub-03`` take several values, as BIDS Apps do.

    Typer options take one value each; this rewrites the values that follow the flag
    (up to the next option or ``KEY=VALUE`` override) into repeated flags.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        flag, eq, inline = token.partition("=")
        if flag in MULTI_VALUE_OPTIONS:
            values = [inline] if eq else []
            i += 1
            while i < len(argv) and not argv[i].startswith("-") and "=" not in argv[i]:
                values.append(argv[i])
                i += 1
            if not values:
                out.append(flag)  # let the parser report the missing value
            for value in values:
                out += [flag, value]
            continue
        out.append(token)
        i += 1
    return out


__all__ = ["MULTI_VALUE_OPTIONS", "expand_multi_value_options", "quote"]
