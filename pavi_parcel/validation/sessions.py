"""Validation from the training sessions alone: reliability and leave-one-session-out likelihood.

For every subject of the training fingerprint store (and every subject added by ``apply``),
the trained model parcellates each session on its own (:func:`pavi_parcel.model.new_subjects.infer_subjects`
given only that session's fingerprints: the same as zeroing the others, whose evidence and
encodings are masked out; no refit, the group model fixes the network order, so maps are
compared without relabelling). Then:

* **Reliability** (Kong et al. 2019): ``within_dice`` is the mean Dice between a subject's own
  session maps, ``between_dice`` the mean Dice between its first session map and the other
  subjects' first session maps (:func:`pavi_parcel.metrics.scores.within_between_dice`). Individual maps
  describe individual topography, not noise, when ``within_dice > between_dice``.
* **Leave-one-session-out log-likelihood** (subjects with two sessions or more): session ``t``'s
  fingerprints are scored under the map inferred from the subject's other sessions, and under
  the group atlas, with the trained vMF (:meth:`TrainedVmf.log_likelihood`, scores of
  :func:`pavi_parcel.metrics.scores.heldout_log_likelihood`), averaged over the held-out sessions.
  The group atlas and the group profiles were fitted with session ``t`` among their data (a
  small advantage to the group, shared by every subject); the individual map never saw it.

The pseudo-sessions of a single-session cohort (:mod:`pavi_parcel.fingerprints.split`) are
parcellated together as the one session they come from: two halves of a session are not two
sessions, and their agreement is not a test-retest reliability.

Memory: one subject's fingerprints (T, N, D) and its per-session hard maps (N,) at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pavi_parcel.fingerprints.split import real_session
from pavi_parcel.metrics.scores import heldout_log_likelihood, within_between_dice
from pavi_parcel.model.new_subjects import infer_subjects
from pavi_parcel.stores.fingerprints import FingerprintStore

from .maps import SubjectMaps, TrainedVmf

log = logging.getLogger(__name__)

LOGLIK_COLUMNS = ("heldout_loglik", "group_heldout_loglik", "heldout_pred_loglik", "group_heldout_pred_loglik")


def loglik_scores(vmf: TrainedVmf, x: np.ndarray, probs: np.ndarray, group_probs: np.ndarray) -> dict[str, float]:
    """Held-out log-likelihood per vertex of one session under a subject map and the group atlas.

    Parameters
    ----------
    vmf : TrainedVmf
    x : ndarray of shape (n_vertices, D)
        Held-out demeaned unit fingerprints (all-zero rows: no data, left out).
    probs, group_probs : ndarray of shape (n_vertices, K)
        The subject's q(y) (from other data than ``x``) and the group atlas.

    Returns
    -------
    dict
        :data:`LOGLIK_COLUMNS`: expected log-likelihood and log predictive density per vertex,
        individual then group (NaN when the session has no data).
    """
    ll, valid = vmf.log_likelihood(x)
    own = heldout_log_likelihood(np.asarray(probs)[valid], ll)
    group = heldout_log_likelihood(np.asarray(group_probs)[valid], ll)
    return dict(zip(LOGLIK_COLUMNS, (own[0], group[0], own[1], group[1])))


def _real_sessions(names: list[str], present: list[int]) -> list[list[int]]:
    """Store sessions grouped by the session they come from: pseudo-sessions (``1.a``, ``1.b``) are one."""
    groups: dict[str, list[int]] = {}
    for t in present:
        groups.setdefault(real_session(names[t]), []).append(t)
    return list(groups.values())


def session_metrics(maps: SubjectMaps, vmf: TrainedVmf, stores: list[tuple[str, Path, int]],
                    leave_one_out: bool = True) -> pd.DataFrame:
    """Reliability (and, optionally, leave-one-session-out likelihood) of every stored subject.

    Parameters
    ----------
    maps : SubjectMaps
        For the group atlas.
    vmf : TrainedVmf
        The trained model (its ``state`` parcellates the sessions).
    stores : list of (str, Path, int)
        Subject label, fingerprint store and subject row (:func:`pavi_parcel.validation.maps.subject_stores`).
    leave_one_out : bool
        Also score each session under the map of the subject's other sessions.

    Returns
    -------
    DataFrame
        One row per subject with data: ``subject``, ``n_sessions``, ``within_dice``,
        ``between_dice``, and with ``leave_one_out`` the :data:`LOGLIK_COLUMNS` and
        ``loglik_data`` = ``leave-one-session-out``.
    """
    group = maps.posterior.group_probs
    k = maps.posterior.n_networks
    labels: list[str] = []
    session_labels: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    opened: dict[Path, FingerprintStore] = {}
    try:
        for label, path, row in tqdm(stores, desc="session maps", unit="subject", disable=len(stores) < 2):
            if path not in opened:
                opened[path] = FingerprintStore(path)
            store = opened[path]
            x = store.read(row)  # (T, N, D)
            present = _real_sessions(store.sessions, [t for t in range(x.shape[0])
                                                     if store.session_mask[row, t] and np.any(x[t])])
            if not present:
                continue
            single = infer_subjects(vmf.state, [x[ts] for ts in present], vmf.refine_steps)  # (P, N, K)
            labels.append(label)
            session_labels.append(single.argmax(-1).astype(np.int16))
            out: dict[str, Any] = {"subject": label, "n_sessions": len(present)}
            if leave_one_out and len(present) >= 2:
                scores = []
                for j, held in enumerate(present):
                    others = [u for ts in present if ts is not held for u in ts]
                    probs = single[1 - j] if len(present) == 2 else \
                        infer_subjects(vmf.state, [x[others]], vmf.refine_steps)[0]
                    scores += [loglik_scores(vmf, x[t], probs, group) for t in held]
                out.update({c: float(np.nanmean([s[c] for s in scores])) for c in LOGLIK_COLUMNS})
                out["loglik_data"] = "leave-one-session-out"
            rows.append(out)
    finally:
        for store in opened.values():
            store.close()
    within, between = within_between_dice(session_labels, k)
    table = pd.DataFrame(rows, columns=["subject", "n_sessions"] + (
        [*LOGLIK_COLUMNS, "loglik_data"] if leave_one_out else []))
    table.insert(2, "within_dice", within)
    table.insert(3, "between_dice", between)
    return table
