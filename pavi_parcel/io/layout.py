"""The layout of an OUT_DIR: where the model, the stores and the label table of a run live."""

from __future__ import annotations

import json
from pathlib import Path


def config_path(out_dir: Path) -> Path:
    """``OUT_DIR/model/config.yaml``: the resolved settings of the run."""
    return Path(out_dir) / "model" / "config.yaml"


def posterior_path(out_dir: Path) -> Path:
    """``OUT_DIR/model/posterior.h5``."""
    return Path(out_dir) / "model" / "posterior.h5"


def independent_posterior_path(out_dir: Path) -> Path:
    """``OUT_DIR/model/posterior_independent.h5``: a nested scale's own fit, before its maps became sums of the
    finer scale's (:mod:`pavi_parcel.workflows.scales`)."""
    return Path(out_dir) / "model" / "posterior_independent.h5"


def scale_folder(out_dir: Path, n_networks: int) -> Path:
    """``OUT_DIR/pavi<K>``: the derivative of one scale of a multi-scale fit (``--n-networks 7 17``)."""
    return Path(out_dir) / f"pavi{int(n_networks)}"


def parent_table_path(out_dir: Path, fine: int, coarse: int) -> Path:
    """``OUT_DIR/seg-pavi<fine>_parents-pavi<coarse>.tsv``: the coarse parent of every fine network."""
    return Path(out_dir) / f"seg-pavi{int(fine)}_parents-pavi{int(coarse)}.tsv"


def label_table_path(out_dir: Path, n_networks: int) -> Path:
    """``OUT_DIR/seg-pavi<K>_dseg.tsv``."""
    return Path(out_dir) / f"seg-pavi{n_networks}_dseg.tsv"


def subject_maps_folder(out_dir: Path, label: str) -> Path:
    """``OUT_DIR/sub-<label>/anat``: a subject's maps (a map of the subject's cortex from all of its runs,
    where BIDS puts segmentations; not of one run, so not ``func/``)."""
    return Path(out_dir) / f"sub-{bare_label(label)}" / "anat"


def group_maps_folder(out_dir: Path) -> Path:
    """``OUT_DIR/group``: the group atlas (outside the subjects' folders, so that its sidecars are not
    inherited by theirs)."""
    return Path(out_dir) / "group"


def connectome_model_folder(out_dir: Path) -> Path:
    """``OUT_DIR/model/connectome``: the population graph and the cached group-sparse estimate."""
    return Path(out_dir) / "model" / "connectome"


def population_graph_path(out_dir: Path, n_networks: int) -> Path:
    """``OUT_DIR/model/connectome/seg-pavi<K>_graph.tsv``: the edges of the population graph."""
    return connectome_model_folder(out_dir) / f"seg-pavi{n_networks}_graph.tsv"


def qc_table_path(out_dir: Path) -> Path:
    """``OUT_DIR/qc/runs.tsv``: the quality gates' measures and verdict, one row per run."""
    return Path(out_dir) / "qc" / "runs.tsv"


def applied_posterior_path(out_dir: Path, label: str) -> Path:
    """``OUT_DIR/model/applied/sub-<label>_posterior.h5``: a subject added by ``pavi-parcel apply``."""
    return Path(out_dir) / "model" / "applied" / f"sub-{bare_label(label)}_posterior.h5"


def applied_paths(out_dir: Path) -> list[Path]:
    return sorted((Path(out_dir) / "model" / "applied").glob("sub-*_posterior.h5"))


def applied_label(path: Path) -> str:
    return path.name[len("sub-"):-len("_posterior.h5")]


def bare_label(label: str) -> str:
    """Participant label without a ``sub-`` prefix."""
    return label[4:] if label.startswith("sub-") else label


def fingerprint_store_path(work_dir: Path) -> Path:
    """Where the fingerprint store of a work folder lives."""
    return work_dir / "fingerprints.h5"


def is_pavi_output(folder: Path) -> bool:
    if (folder / "model" / "posterior.h5").exists() or (folder / "work" / "fingerprints.h5").exists() \
            or (folder / "model" / "config.yaml").exists():
        return True
    return generated_by(folder) == "pavi-parcel"


def generated_by(folder: Path) -> str | None:
    try:
        desc = json.loads((folder / "dataset_description.json").read_text())
        return str((desc.get("GeneratedBy") or [{}])[0].get("Name"))
    except (OSError, ValueError, AttributeError, IndexError, TypeError):
        return None

