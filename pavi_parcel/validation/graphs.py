"""Graph recovery against a planted network graph: how well the subjects' connectomes find the planted edges.

For every subject with a partial-correlation connectome (``pavi-parcel connectome``) and a
planted graph (``pavi-parcel simulate --graph-density``), the fitted networks are matched to the
planted ones (the cohort's matching of :func:`.matching.truth_mapping`) and the connectome's rows
and columns put in planted order, then:

* ``graph_edge_f1``: F1 of the edges (non-zero partial correlations) against the planted edges;
* ``graph_edge_auc``: how well the size of the partial correlations ranks the planted edges above
  the other pairs (ROC area; threshold-free, so it does not depend on the penalty chosen);
* ``graph_partial_r``: correlation of the estimated and planted partial correlations over the
  network pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pavi_parcel.atlas.naming import read_label_table
from pavi_parcel.connectome.files import STATS, connectome_entities, read_relmat, subject_relmat_path
from pavi_parcel.io.layout import label_table_path
from pavi_parcel.metrics.graphs import edge_auc, edge_correlation, edge_f1
from pavi_parcel.simulate.graph import PlantedGraph, load_planted_graph
from pavi_parcel.stores.posterior import Posterior


def in_planted_order(matrix: np.ndarray, order: np.ndarray, mapping: np.ndarray, k_truth: int) -> np.ndarray | None:
    """A connectome in label-table order moved to planted order (None when the matching is not one-to-one)."""
    planted = mapping[np.asarray(order)]
    if len(set(planted.tolist())) != len(planted) or planted.max() >= k_truth or len(planted) != k_truth:
        return None
    out = np.zeros_like(matrix)
    out[np.ix_(planted, planted)] = matrix
    return out


def graph_metrics(out_dir: Path, posterior: Posterior, mapping: np.ndarray, truth_dir: Path) -> pd.DataFrame | None:
    """Per subject: ``graph_edge_f1``, ``graph_edge_auc``, ``graph_partial_r`` (None without a planted graph or files).

    Parameters
    ----------
    out_dir : Path
    posterior : Posterior
        The fit (its subjects, space and K).
    mapping : ndarray of int
        ``mapping[l]``: the planted network matched to fitted network ``l``.
    truth_dir : Path
        The simulation's ``truth/`` folder.
    """
    graph: PlantedGraph | None = load_planted_graph(truth_dir)
    table_path = label_table_path(out_dir, posterior.n_networks)
    if graph is None or not table_path.is_file():
        return None
    order = read_label_table(table_path).order
    entities = connectome_entities(posterior.space, posterior.n_networks)
    rows = []
    for subject in posterior.subjects:
        path = subject_relmat_path(out_dir, subject, entities, STATS[1])
        if subject not in graph.subjects or not path.is_file():
            continue
        estimated = in_planted_order(read_relmat(path)[0], order, mapping, graph.group_precision.shape[0])
        if estimated is None:
            continue
        planted = graph.subject_partial(subject)
        rows.append({"subject": subject, "graph_edge_f1": edge_f1(estimated, graph.edges),
                     "graph_edge_auc": edge_auc(estimated, graph.edges),
                     "graph_partial_r": edge_correlation(estimated, planted)})
    return pd.DataFrame(rows) if rows else None


__all__ = ["graph_metrics", "in_planted_order"]
