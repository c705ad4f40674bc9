"""The planted structure shared by both simulators: group layout, subject layouts, coupling, settings checks."""


from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from pavi_parcel.atlas.references import default_colors, load_yeo
from pavi_parcel.exceptions import BadInputError, BadInputErrors

from .fmri import group_factors
from .geometry import YEO_SPACES, SimSpace, build_space, check_space
from .layout import FIELD_ITERATIONS, STREAM_BANK, STREAM_GROUP, FieldBank, SubjectLayouts, group_layout, rng_for

DEFAULT_SNR = 0.3
"""Network-signal to thermal-noise variance ratio of the fMRI simulator."""
DEFAULT_FINGERPRINT_SNR = 0.8
"""Profile to correlation-noise variance ratio of the direct fingerprint simulator."""
DEFAULT_DEVIATION = 0.2
"""Fraction of points whose subject label differs from the group layout."""


# --------------------------------------------------------------------------- shared planting
@dataclass
class Plan:
    sim: SimSpace
    group: np.ndarray           # (n_valid,) 1..K
    names: list[str]
    colors: np.ndarray
    bank: FieldBank
    layouts: SubjectLayouts
    factors: np.ndarray         # (K, r) group coupling factors
    layout: str


@lru_cache(maxsize=4)
def group_plan(space: str, n_networks: int, layout: str, seed: int, resolution_mm: int) -> Plan:
    """The group-level plan (read-only once built, so cached per process)."""

    sim = build_space(space, resolution_mm)
    if layout == "auto":
        layout = "yeo" if space in YEO_SPACES and n_networks in (7, 17) else "procedural"
    rng = rng_for(seed, STREAM_GROUP)
    group, names = group_layout(sim, layout, n_networks, rng)
    colors = load_yeo(n_networks, sim.info).colors if layout == "yeo" else default_colors(n_networks)
    bank = FieldBank(sim, rng_for(seed, STREAM_BANK))
    return Plan(sim, group, names, colors, bank, SubjectLayouts(sim, group, n_networks, bank),
                 group_factors(n_networks, rng), layout)


def planted_parents(plan: Plan) -> dict[int, list[int]]:
    """Planted nesting of a Yeo 17-network layout: each network's Yeo 7-network parent (largest overlap).

    Empty for other layouts (procedural cells have no coarser scale).
    """
    if plan.layout != "yeo" or len(plan.names) != 17:
        return {}
    coarse = load_yeo(7, plan.sim.info).labels[plan.sim.valid]
    overlap = np.zeros((18, 8), dtype=np.int64)
    np.add.at(overlap, (plan.group, coarse), 1)
    return {7: [int(np.argmax(overlap[label, 1:])) + 1 for label in range(1, 18)]}


def deviation_layouts(plan: Plan, smoothness: int, seed: int) -> SubjectLayouts:
    """Subject layouts whose deviation fields have ``smoothness`` averaging steps (the plan's own at the default)."""
    if smoothness == FIELD_ITERATIONS:
        return plan.layouts
    bank = FieldBank(plan.sim, rng_for(seed, STREAM_BANK, 1), iterations=smoothness)
    return SubjectLayouts(plan.sim, plan.group, len(plan.names), bank)


def full_labels(sim: SimSpace, values: np.ndarray) -> np.ndarray:
    out = np.zeros(sim.info.n_total, dtype=np.int16)
    out[sim.valid] = values
    return out


def label_names(prefix_count: int, n: int) -> list[str]:
    width = max(2, len(str(prefix_count)))
    return [f"{i:0{width}d}" for i in range(1, n + 1)]


def check_settings(n_subjects: int, n_sessions: int, snr: float, deviation: float, n_networks: int,
              space: str, layout: str, extra: list[BadInputError] | None = None) -> None:
    errors = list(extra or [])
    if n_subjects < 1:
        errors.append(BadInputError("Invalid number of subjects", "at least 1", str(n_subjects), "raise --n-subjects"))
    if n_sessions < 1:
        errors.append(BadInputError("Invalid number of sessions", "at least 1", str(n_sessions), "raise --n-sessions"))
    if not snr > 0:
        errors.append(BadInputError("Invalid snr", "a positive number", str(snr), "pass snr > 0"))
    if not 0 <= deviation < 0.9:
        errors.append(BadInputError("Invalid deviation", "a fraction in [0, 0.9)", str(deviation),
                                    "pass deviation=0.2"))
    if n_networks < 2:
        errors.append(BadInputError("Invalid number of networks", "at least 2", str(n_networks), "raise --n-networks"))
    if layout not in ("auto", "yeo", "procedural"):
        errors.append(BadInputError(f"Unknown layout {layout!r}", "auto, yeo or procedural", repr(layout),
                                    "pass layout='auto'"))
    try:
        check_space(space)
    except BadInputError as exc:
        errors.append(exc)
    if layout == "yeo" and (space not in YEO_SPACES or n_networks not in (7, 17)):
        errors.append(BadInputError("The Yeo layout needs fsaverage5 or fsLR and 7 or 17 networks",
                                    "space fsaverage5 or fsLR with n_networks 7 or 17",
                                    f"space {space} with {n_networks} networks",
                                    "use layout='procedural' (or 'auto') for other spaces or network counts"))
    if errors:
        raise BadInputErrors(errors)


def plain_settings(**kwargs: Any) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in kwargs.items()}


def store_complete(path: Path, settings: dict[str, Any]) -> bool:
    """True when ``path`` is a finished store made with exactly these settings."""
    import h5py

    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as h5:
            return h5.attrs.get("settings") == json.dumps(settings, sort_keys=True)
    except OSError:
        return False


__all__ = ["DEFAULT_DEVIATION", "DEFAULT_FINGERPRINT_SNR", "DEFAULT_SNR", "Plan", "check_settings",
           "deviation_layouts", "full_labels", "group_plan", "label_names", "plain_settings", "store_complete"]
