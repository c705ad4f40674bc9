"""How good are the maps? Against planted truth when there is one, on held-out data when not.

With truth (simulations): adjusted Rand index, Dice after Hungarian matching and the expected
calibration error of the soft maps, for every subject's map and for the group atlas used as
that subject's map (the baseline every individual parcellation must beat).

Without truth (real data): resting-state homogeneity (Schaefer 2018, Kong 2019) of each
subject's map on held-out runs, compared with the group atlas's homogeneity on the same runs.

Results go to ``OUT_DIR/model/metrics.tsv`` (one row per subject, plus a ``mean`` row), which
the report shows.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import atomic_write
from .exceptions import BadInputError
from .metrics import (adjusted_rand_index, expected_calibration_error, homogeneity, hungarian_match,
                      mean_dice_after_matching)
from .store import Posterior, read_posterior

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.tsv"


def truth_metrics(posterior: Posterior, truth: Any) -> pd.DataFrame:
    """Score every subject's soft map against planted labels.

    Parameters
    ----------
    posterior : Posterior
        Fitted maps, ``subject_probs`` of shape (n_subjects, n_vertices, K).
    truth : Truth
        From :func:`pavi_parcel.simulate.load_truth`; labels 1..K in the full space.

    Returns
    -------
    DataFrame
        One row per subject: ``ari``, ``dice``, ``ece``, ``accuracy``, ``confidence`` of the
        individual map and ``group_ari``, ``group_dice`` of the group atlas.
    """
    missing = [s for s in posterior.subjects if s not in truth.subject_labels]
    if missing:
        raise BadInputError("Truth does not cover the fitted subjects", "labels for every subject",
                            f"none for {', '.join(missing[:3])}", "pass the truth/ folder of this simulation")
    k = posterior.n_networks
    truth_rows = np.stack([truth.subject_labels[s][posterior.vertex_index] for s in posterior.subjects]) - 1
    pred_rows = posterior.subject_probs.argmax(axis=2)
    on_cortex = truth_rows >= 0
    # One matching for the whole cohort: networks keep one identity across subjects.
    k_truth = int(truth_rows.max()) + 1
    n_labels = max(k, k_truth)
    mapping = hungarian_match(pred_rows[on_cortex], truth_rows[on_cortex], n_labels)
    group_pred = posterior.group_probs.argmax(axis=1)
    rows = []
    for i, subject in enumerate(posterior.subjects):
        keep = on_cortex[i]
        true = truth_rows[i, keep]
        probs = _probs_in_truth_order(posterior.subject_probs[i, keep], mapping, k_truth)
        rows.append({
            "subject": subject,
            "ari": adjusted_rand_index(pred_rows[i, keep], true),
            "dice": mean_dice_after_matching(pred_rows[i, keep], true, n_labels),
            "ece": expected_calibration_error(probs, true),
            "accuracy": float(np.mean(probs.argmax(1) == true)),
            "confidence": float(np.mean(probs.max(1))),
            "group_ari": adjusted_rand_index(group_pred[keep], true),
            "group_dice": mean_dice_after_matching(group_pred[keep], true, n_labels),
        })
    return pd.DataFrame(rows)


def _probs_in_truth_order(probs: np.ndarray, mapping: np.ndarray, k_truth: int) -> np.ndarray:
    """Move the model's columns to their matched truth networks: shape (n_vertices, k_truth)."""
    out = np.zeros((probs.shape[0], k_truth), dtype=np.float64)
    for model_label in range(probs.shape[1]):
        if mapping[model_label] < k_truth:
            out[:, mapping[model_label]] += probs[:, model_label]
    return out


def heldout_metrics(posterior: Posterior, heldout_dir: Path, cfg: Any) -> pd.DataFrame:
    """Homogeneity of each subject's map and of the group atlas on held-out runs.

    Parameters
    ----------
    posterior : Posterior
    heldout_dir : Path
        A BIDS dataset with other runs (or sessions) of the same participants.
    cfg : DictConfig
        The fitted run's resolved config (space, ingestion settings).

    Returns
    -------
    DataFrame
        One row per subject with held-out data: ``homogeneity`` and ``group_homogeneity``.
    """
    from .bids import find_runs
    from .ingest import ingest_runs
    from .store import read_run_timeseries

    runs = find_runs(Path(heldout_dir), space=str(cfg.data.space), participants=posterior.subjects)
    group_labels = posterior.group_probs.argmax(axis=1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="pavi-heldout-") as work:
        paths = ingest_runs(runs, Path(work), cfg.ingest, n_jobs=int(cfg.get("n_jobs", 1)))
        for run, path in zip(runs, paths):
            if run.subject not in posterior.subjects:
                continue
            series = read_run_timeseries(path)
            common, in_model, in_run = np.intersect1d(posterior.vertex_index, series.vertex_index,
                                                      return_indices=True)
            data = series.data[:, in_run]
            subject = posterior.subject_probs[posterior.subjects.index(run.subject), in_model].argmax(axis=1)
            rows.append({"subject": run.subject, "run": run.key,
                         "homogeneity": homogeneity(subject, data),
                         "group_homogeneity": homogeneity(group_labels[in_model], data)})
    table = pd.DataFrame(rows)
    return table.groupby("subject", as_index=False)[["homogeneity", "group_homogeneity"]].mean()


def validate_run(out_dir: Path, truth_dir: Path | None = None, heldout_dir: Path | None = None) -> pd.DataFrame:
    """Compute every available metric for a fitted run and save ``model/metrics.tsv``.

    Parameters
    ----------
    out_dir : Path
        Output folder of ``pavi-parcel fit``.
    truth_dir : Path, optional
        ``truth/`` folder of a simulation.
    heldout_dir : Path, optional
        BIDS dataset with held-out runs of the fitted participants.

    Returns
    -------
    DataFrame
        The table written, one row per subject and a final ``mean`` row.
    """
    out_dir = Path(out_dir)
    posterior_path = out_dir / "model" / "posterior.h5"
    if not posterior_path.is_file():
        raise BadInputError(f"No fitted model in {out_dir}", "model/posterior.h5", "no such file",
                            "run `pavi-parcel fit BIDS_DIR OUT_DIR` first")
    if truth_dir is None and heldout_dir is None:
        raise BadInputError("Nothing to validate against", "--truth DIR and/or --heldout BIDS_DIR",
                            "neither", "pass the simulation's truth/ folder or a held-out BIDS dataset")
    posterior = read_posterior(posterior_path)
    table = pd.DataFrame({"subject": posterior.subjects})
    if truth_dir is not None:
        from .simulate import load_truth

        table = table.merge(truth_metrics(posterior, load_truth(truth_dir)), on="subject")
    if heldout_dir is not None:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(out_dir / "model" / "config.yaml")
        table = table.merge(heldout_metrics(posterior, Path(heldout_dir), cfg), on="subject", how="left")
    mean = table.drop(columns="subject").mean(numeric_only=True).to_dict()
    table = pd.concat([table, pd.DataFrame([{"subject": "mean", **mean}])], ignore_index=True)
    with atomic_write(out_dir / "model" / METRICS_FILE) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    return table
