"""How good are the maps? Against planted truth when there is one, on held-out data when not.

With truth (simulations, ``--truth``): adjusted Rand index, Dice after Hungarian matching and
the expected calibration error of the soft maps, for every subject's map and for the group
atlas used as that subject's map (the baseline every individual parcellation must beat).

Without truth (real data), every individual score comes with the group atlas's score on the
same data, so each row says whether the individual map beats the group one:

* from the training sessions (:mod:`pavi_parcel.validation.sessions`, whenever
  ``model/model_state.pt`` and the fingerprint store are there): within-subject (across
  sessions) versus between-subject Dice of single-session maps (Kong 2019), and, without
  ``--heldout``, the leave-one-session-out log-likelihood per vertex;
* from held-out runs (``--heldout``, :mod:`pavi_parcel.validation.heldout`): resting-state
  homogeneity (Schaefer 2018, Kong 2019) and the held-out log-likelihood per vertex.

Subjects added by ``pavi-parcel apply`` are scored too where truth, held-out runs or their
stored sessions cover them (``source`` = ``apply``). Results go to ``OUT_DIR/model/metrics.tsv``
(one row per subject, plus a ``mean`` row over the subject rows), which the report shows;
columns a run cannot compute are left out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pavi_parcel.exceptions import BadInputError
from pavi_parcel.inference.device import torch_threads
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.metrics.scores import adjusted_rand_index, expected_calibration_error, mean_dice_after_matching
from pavi_parcel.settings.compose import saved_settings
from pavi_parcel.simulate.truth import coarsened, load_nesting, load_truth
from pavi_parcel.stores.posterior import Posterior, read_posterior

from .graphs import graph_metrics
from .heldout import heldout_metrics, plan_heldout
from .maps import SubjectMaps, load_subject_maps, load_trained_vmf, subject_stores
from .matching import truth_mapping
from .nesting import parent_recovery
from .sessions import session_metrics

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
    truth_rows, pred_rows, mapping = truth_mapping(posterior, truth)
    on_cortex = truth_rows >= 0
    k_truth = int(truth_rows.max()) + 1
    n_labels = max(posterior.n_networks, k_truth)
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


def _truth_table(maps: SubjectMaps, truth: Any, truth_dir: Path) -> pd.DataFrame:
    """:func:`truth_metrics` of the training subjects and of the applied subjects the truth covers, with the
    graph recovery of their connectomes where the simulation planted a graph (:mod:`.graphs`)."""
    extra = [label for label in maps.applied if label in truth.subject_labels]
    post = read_posterior(maps.path)
    if extra:
        probs = np.concatenate([post.subject_probs, np.stack([maps.probs(label) for label in extra])])
        post = Posterior(probs, post.group_probs, post.group_profiles, post.subjects + extra, post.sessions,
                         post.vertex_index, post.space, post.attrs)
    table = truth_metrics(post, truth)
    graphs = graph_metrics(maps.path.parent.parent, post, truth_mapping(post, truth)[2], truth_dir)
    return table if graphs is None else table.merge(graphs, on="subject", how="left")


def scale_truth(truth: Any, truth_dir: Path, n_networks: int) -> Any:
    """The truth at the fit's scale: coarsened by the planted nesting when the fit has fewer networks than the
    simulation planted and the simulation planted parents for that K (``truth/nesting.json``)."""
    parents = load_nesting(truth_dir).get(int(n_networks))
    if truth.n_networks == n_networks or parents is None:
        return truth
    log.info("Scoring against the planted %d-network labels merged into their %d planted parents",
             truth.n_networks, n_networks)
    return coarsened(truth, parents)


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
        The table written: ``subject``, ``source`` (``fit`` or ``apply``), then the columns of
        :func:`truth_metrics` (with ``truth_dir``), of
        :func:`pavi_parcel.validation.sessions.session_metrics` (``n_sessions``,
        ``within_dice``, ``between_dice``; with the log-likelihood columns when there is no
        ``heldout_dir``) and of :func:`pavi_parcel.validation.heldout.heldout_metrics`; one row
        per subject and a final ``mean`` row.

    Raises
    ------
    BadInputError
        No fitted model; nothing to validate against (no truth, no held-out runs and no
        stored sessions with a model state); bad truth or held-out data.
    """
    out_dir = Path(out_dir)
    maps = load_subject_maps(out_dir)
    settings = saved_settings(out_dir)
    vmf = load_trained_vmf(out_dir)
    stores = subject_stores(out_dir, maps, settings) if vmf is not None else []
    if truth_dir is None and heldout_dir is None and not stores:
        raise BadInputError("Nothing to validate against", "truth_dir and/or heldout_dir (or a fit whose "
                            "model/model_state.pt and work/fingerprints.h5 are kept)", "neither",
                            "pass the simulation's truth/ folder or a held-out BIDS dataset")
    plan = None
    if heldout_dir is not None:  # its input checks are cheap: report problems before any long computation
        plan = plan_heldout(out_dir, Path(heldout_dir), maps)
    table = pd.DataFrame({"subject": maps.labels, "source": [maps.source(s) for s in maps.labels]})
    parts = []
    if truth_dir is not None:
        parts.append(_truth_table(maps, scale_truth(load_truth(truth_dir), Path(truth_dir), maps.posterior.n_networks),
                                  Path(truth_dir)))
    if stores:
        with torch_threads(0 if settings is None else settings.fit.num_threads):
            parts.append(session_metrics(maps, vmf, stores, leave_one_out=heldout_dir is None))
    if plan is not None:
        parts.append(heldout_metrics(plan, maps))
    for part in parts:
        table = table.merge(part, on="subject", how="left")
    scored = table.drop(columns=["subject", "source"]).notna().any(axis=1)
    table = table[scored | (table["source"] == "fit")].reset_index(drop=True)
    mean = table.drop(columns=["subject", "source"]).mean(numeric_only=True).to_dict()
    if "n_sessions" in table:  # a count: whole numbers, no mean
        table["n_sessions"] = table["n_sessions"].astype("Int64")
        mean.pop("n_sessions", None)
    mean_row = {"subject": "mean", "source": "", **mean}
    nested_from = maps.posterior.attrs.get("nested_from")
    if truth_dir is not None and nested_from is not None:  # a cohort score: in the mean row only
        recovered = parent_recovery(out_dir.parent / f"pavi{int(nested_from)}", out_dir, Path(truth_dir))
        if recovered is not None:
            mean_row["parent_recovery"] = recovered
            log.info("Parents: %.2f of the %d-network scale's networks under their planted parent", recovered,
                     int(nested_from))
    if "loglik_data" in table:
        mean_row["loglik_data"] = "/".join(sorted(set(table["loglik_data"].dropna())))
    table = pd.concat([table, pd.DataFrame([mean_row])], ignore_index=True)
    with atomic_write(out_dir / "model" / METRICS_FILE) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.4f")
    return table
