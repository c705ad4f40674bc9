"""The population graph: the edges every subject's group-sparse precision shares, with their mean weights.

``OUT_DIR/model/connectome/``::

    seg-pavi<K>_graph.tsv      one row per edge: source, target (network names), partial_correlation
                               (mean over subjects), partial_correlation_sd, pearson_correlation (mean)
    seg-pavi<K>_graph.json     the estimator, its penalty, the subjects and the columns
    seg-pavi<K>_stat-partialcorrelation_relmat.tsv   the mean partial correlation matrix (0 = no edge)
    seg-pavi<K>_stat-pearsoncorrelation_relmat.tsv   the mean correlation matrix
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from pavi_parcel.atlas.naming import LabelTable
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.io.files import write_json
from pavi_parcel.io.layout import population_graph_path

from .estimate import CohortConnectomes
from .files import write_relmat

COLUMNS = {
    "source": "Network (label table name)",
    "target": "Network (label table name)",
    "partial_correlation": "Mean over subjects of the group-sparse partial correlation",
    "partial_correlation_sd": "Standard deviation over subjects of the partial correlation",
    "pearson_correlation": "Mean over subjects of the Pearson correlation of the network time series",
}


def write_population_graph(out_dir: Path, cohort: CohortConnectomes, subjects: list[str], table: LabelTable,
                           meta: dict[str, Any]) -> list[Path]:
    """Write the population graph's edge list and mean matrices (see the module docstring)."""
    k = len(table.names)
    edges = cohort.edges
    mean_partial = np.where(edges | np.eye(k, dtype=bool), cohort.partial.mean(axis=0), 0.0)
    sd_partial = cohort.partial.std(axis=0)
    mean_corr = cohort.correlation.mean(axis=0)
    path = population_graph_path(out_dir, k)
    folder = path.parent
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(list(COLUMNS))
        for i, j in zip(*np.nonzero(np.triu(edges, 1))):
            writer.writerow([table.names[i], table.names[j], f"{mean_partial[i, j]:.6g}", f"{sd_partial[i, j]:.6g}",
                             f"{mean_corr[i, j]:.6g}"])
    info = {**meta, "Subjects": subjects, "NumberOfEdges": int(np.triu(edges, 1).sum()),
            "Description": "Edges of the population graph: network pairs whose partial correlation is not zero "
                           "in the group-sparse precisions (one support shared by every subject).",
            "Columns": COLUMNS}
    written = [path, write_json(path.with_suffix(".json"), info)]
    stem = f"seg-pavi{k}"
    written += write_relmat(Path(folder) / f"{stem}_stat-partialcorrelation_relmat.tsv", mean_partial, table.names,
        {**meta, "Description": "Mean partial correlation over subjects on the population graph's edges."})
    written += write_relmat(Path(folder) / f"{stem}_stat-pearsoncorrelation_relmat.tsv", mean_corr, table.names,
                            {**meta, "Description": "Mean Pearson correlation of the network time series."})
    return written


__all__ = ["write_population_graph"]
