"""Command-line arguments: BIDS-App multi-value options (``--participant-label 01 02``)."""

from __future__ import annotations

MULTI_VALUE_OPTIONS = ("--participant-label", "--participant_label", "--n-networks")

def expand_multi_value_options(argv: list[str]) -> list[str]:
    """Let ``--participant-label 01 02 sub-03`` (and ``--n-networks 7 17``) take several values, as BIDS Apps do.

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


__all__ = ["MULTI_VALUE_OPTIONS", "expand_multi_value_options"]
