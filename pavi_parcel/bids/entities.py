"""BIDS file names: entities, suffix and extension, both ways."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: Entities that do not identify a run: the same acquisition in another space or hemisphere.
NON_IDENTITY = frozenset({"space", "hemi", "res", "den", "desc", "cohort", "suffix", "extension"})


def parse_entities(name: str | Path) -> dict[str, str]:
    """Split a BIDS file name into its entities, suffix and extension.

    Parameters
    ----------
    name : str or Path
        A file name; leading folders are ignored.

    Returns
    -------
    dict of str to str
        ``{key: value}`` for every ``key-value`` part, in file-name order, plus
        ``"suffix"`` (the final part without a dash, ``""`` when absent, as in older
        fMRIPrep surface names) and ``"extension"`` (everything from the first dot, ``""``
        when absent). An empty dict when the name is not BIDS-like: an empty part, a part
        without a dash before the last one, an empty key or value, a repeated key, or an
        underscore in the extension.

    Examples
    --------
    >>> parse_entities("sub-01_task-rest_hemi-L_space-fsaverage5_bold.func.gii")
    {'sub': '01', 'task': 'rest', 'hemi': 'L', 'space': 'fsaverage5', 'suffix': 'bold', 'extension': '.func.gii'}
    """
    base = str(name).replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, rest = base.partition(".")
    if "_" in rest:  # an extension never holds one: 'sub-01_bold.nii_gz' is no BIDS name
        return {}
    parts = stem.split("_")
    entities: dict[str, str] = {}
    suffix = ""
    for i, part in enumerate(parts):
        key, dash, value = part.partition("-")
        if dash and key and value and key not in entities and key not in ("suffix", "extension"):
            entities[key] = value
        elif not dash and part and i == len(parts) - 1 and i > 0:
            suffix = part
        else:
            return {}
    if not entities:
        return {}
    return {**entities, "suffix": suffix, "extension": dot + rest}


def build_name(entities: Mapping[str, str], suffix: str = "", extension: str = "") -> str:
    """Inverse of :func:`parse_entities`: ``key-value`` parts joined by ``_``, then suffix and extension."""
    parts = [f"{k}-{v}" for k, v in entities.items() if k not in ("suffix", "extension")]
    if suffix:
        parts.append(suffix)
    return "_".join(parts) + extension


def normalize_label(label: str, prefix: str) -> str:
    """``'sub-01'`` or ``' 01 '`` -> ``'01'`` (for ``prefix='sub'``)."""
    label = str(label).strip()
    return label[len(prefix) + 1:] if label.startswith(prefix + "-") else label

