"""Small text files written atomically: JSON sidecars, TSV-free text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write indented JSON atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

