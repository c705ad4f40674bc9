"""The report's connectome section: the population graph as a circle of networks and one subject's matrix.

It reads the files ``pavi-parcel connectome`` wrote (``model/connectome/seg-pavi<K>_graph.tsv``,
``seg-pavi<K>_stat-partialcorrelation_relmat.tsv`` and the subjects' ``..._relmat.tsv``), so
the report never needs the connectome code itself.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from pavi_parcel.atlas.naming import LabelTable
from pavi_parcel.io.layout import population_graph_path

from .figures import to_png


def _relmat(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, sep="\t", index_col="Node")
    except (OSError, ValueError, KeyError):
        return None


def connectome_figure(graph: pd.DataFrame, subject: pd.DataFrame | None, subject_name: str,
                      table: LabelTable) -> bytes:
    """Population graph (networks on a circle, edges by mean partial correlation) beside a subject's matrix.

    Parameters
    ----------
    graph : DataFrame of shape (K, K)
        Mean partial correlations on the population graph's edges (0 = no edge), label order.
    subject : DataFrame of shape (K, K) or None
        A subject's partial correlations.
    subject_name : str
    table : LabelTable
        Names and colours of the networks.
    """
    k = len(table.names)
    fig, axes = plt.subplots(1, 2 if subject is not None else 1, figsize=(11 if subject is not None else 5.5, 5))
    axes = np.atleast_1d(axes)
    angle = np.pi / 2 - 2 * np.pi * np.arange(k) / k
    xy = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    values = graph.to_numpy(dtype=float)
    top = max(float(np.max(np.abs(values - np.diag(np.diag(values))))), 1e-6)
    ax = axes[0]
    for i, j in zip(*np.nonzero(np.triu(values, 1))):
        w = values[i, j]
        ax.plot(*xy[[i, j]].T, color="#c44e52" if w > 0 else "#4c72b0", lw=0.5 + 4.5 * abs(w) / top,
                alpha=0.35 + 0.6 * abs(w) / top, zorder=1)
    ax.scatter(*xy.T, s=260, c=np.asarray(table.colors) / 255.0, edgecolors="black", linewidths=0.6, zorder=2)
    for (x, y), name in zip(xy, table.names):
        ax.annotate(name, (1.13 * x, 1.13 * y), va="center", fontsize=7,
                    ha="left" if x > 0.3 else "right" if x < -0.3 else "center")
    ax.legend(handles=[Line2D([], [], color="#c44e52", lw=2, label="positive"),
                       Line2D([], [], color="#4c72b0", lw=2, label="negative")],
              loc="lower center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False, fontsize=8)
    ax.set_title(f"Population graph: {int(np.count_nonzero(np.triu(values, 1)))} edges", fontsize=10)
    ax.set_xlim(-1.45, 1.45)
    ax.set_ylim(-1.35, 1.35)
    ax.set_aspect("equal")
    ax.axis("off")
    if subject is not None:
        ax = axes[1]
        matrix = subject.to_numpy(dtype=float).copy()
        np.fill_diagonal(matrix, np.nan)
        scale = max(float(np.nanmax(np.abs(matrix))), 1e-6) if np.isfinite(matrix).any() else 1.0
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-scale, vmax=scale)
        ax.set_xticks(np.arange(k))
        ax.set_yticks(np.arange(k))
        ax.set_xticklabels(table.names, rotation=90, fontsize=6)
        ax.set_yticklabels(table.names, fontsize=6)
        ax.set_title(f"{subject_name}: partial correlations", fontsize=10)
        fig.colorbar(image, ax=ax, shrink=0.8, label="partial correlation")
    fig.tight_layout()
    return to_png(fig, 80)


def connectome_section_body(out_dir: Path, table: LabelTable) -> tuple[bytes, str] | None:
    """The figure and its caption, or None when the run has no connectomes."""
    out_dir = Path(out_dir)
    k = len(table.names)
    graph = _relmat(population_graph_path(out_dir, k).with_name(f"seg-pavi{k}_stat-partialcorrelation_relmat.tsv"))
    if graph is None or graph.shape != (k, k):
        return None
    found = sorted(out_dir.glob(f"sub-*/func/sub-*_seg-pavi{k}*_stat-partialcorrelation_relmat.tsv"))
    subject = _relmat(found[0]) if found else None
    name = found[0].name.split("_")[0] if found else ""
    if subject is not None and subject.shape != (k, k):
        subject = None
    caption = ("Left: the population graph, network pairs whose partial correlation is not zero in the "
               "group-sparse estimate (one edge set for the cohort), line width by the mean partial "
               "correlation over subjects. "
               + (f"Right: the partial correlations of {name}. " if subject is not None else "")
               + "Files: model/connectome/ and each subject's func/*_relmat.tsv.")
    return connectome_figure(graph, subject, name, table), caption


__all__ = ["connectome_figure", "connectome_section_body"]
