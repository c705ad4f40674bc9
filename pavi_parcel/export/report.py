"""One self-contained HTML report of a fitted run: ``OUT_DIR/report.html``.

Sections: summary and label table; the group atlas and its uncertainty; every subject's hard
map and uncertainty map (the first ``max_subjects``); the ELBO curve; subject-versus-group
Dice; a quality-control table per run (frames kept after scrubbing, mean framewise
displacement, confounds strategy); model metrics when ``model/metrics.tsv`` exists.
Figures are PNG embedded as base64 ``data:`` URIs; the page loads nothing else and runs no
script, so it can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pavi_parcel import __version__
from pavi_parcel.atlas.naming import LabelTable, default_table, read_label_table
from pavi_parcel.export import figures as rf
from pavi_parcel.fingerprints.split import is_split, real_session
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.io.layout import bare_label, label_table_path, qc_table_path
from pavi_parcel.metrics.scores import dice_per_network
from pavi_parcel.settings.compose import saved_settings
from pavi_parcel.spaces import MeshUnavailable, Space
from pavi_parcel.stores.posterior import Posterior, fitted_posterior, read_posterior, read_subject_probs
from pavi_parcel.stores.timeseries import read_run_attrs

from .connectome_section import connectome_section_body
from .writers import normalized_entropy, to_full_space

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;
padding:1em 2em;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
tr.warn td{background:#fff2cc}img{max-width:100%;height:auto;display:block}
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #999;vertical-align:middle;margin-right:.4em}
.muted{color:#666;font-size:.9em}figure{margin:.6em 0}figcaption{font-size:.85em;color:#555}
details{margin:.3em 0}summary{cursor:pointer;font-weight:600}
"""


def build_report(out_dir: Path, max_subjects: int = 50) -> Path:
    """Write ``OUT_DIR/report.html`` from the fitted posterior and the run's logs.

    Parameters
    ----------
    out_dir : Path
        Output folder of a fitted run (``model/posterior.h5`` required; ``model/elbo.tsv``,
        ``model/metrics.tsv``, ``work/timeseries/*.h5`` and ``seg-pavi<K>_dseg.tsv`` used
        when present).
    max_subjects : int
        Subjects drawn individually (the first ones); every subject is in the Dice table.

    Returns
    -------
    Path
        The report.
    """
    out_dir = Path(out_dir)
    source = fitted_posterior(out_dir)
    post = read_posterior(source, subjects=False)
    table = _label_table(out_dir, post)
    draw, view_note = _map_drawer(post.space, table.colors)
    group = table.reorder(post.group_probs)
    group_hard = np.argmax(group, axis=1)
    parts = [_summary(post, table, out_dir), _label_section(table)]
    if draw is None:
        parts.append(_section("Group atlas", f"<p class=\"muted\">{_e(view_note)}</p>"))
    else:
        parts.append(_section("Group atlas", _figure(draw(_rows(group, post), width=11.0, fast=False),
                              "Group atlas: most probable network (top) and normalised posterior entropy "
                              "(bottom); " + view_note)
                              + _figure(rf.colorbar_figure(), "Uncertainty scale: 0 = certain, 1 = uniform.")))

    dice, subject_html = [], []
    for s, label in enumerate(tqdm(post.subjects, desc="report", unit="subject")):
        probs = table.reorder(read_subject_probs(source, s))
        dice.append(mean_dice(np.argmax(probs, axis=1), group_hard, post.n_networks))
        if s < max_subjects:
            name = f"sub-{bare_label(label)}"
            subject_html.append(f"<details{' open' if s < 3 else ''}><summary>{_e(name)} "
                                f"(Dice with group {dice[-1]:.3f})</summary>"
                                + ("" if draw is None else
                                   _figure(draw(_rows(probs, post)), f"{name}: hard map and uncertainty"))
                                + "</details>")
    note = (f"<p class=\"muted\">Showing {min(max_subjects, len(post.subjects))} of {len(post.subjects)} "
            "subjects.</p>")
    parts.append(_section("Subjects", note + "".join(subject_html)))
    parts.append(_elbo_section(out_dir, rf))
    parts.append(_dice_section(post.subjects, np.asarray(dice), rf))
    connectomes = connectome_section_body(out_dir, table)
    if connectomes is not None:
        parts.append(_section("Connectomes", _figure(*connectomes)))
    parts.append(_qc_section(out_dir))
    parts.append(_metrics_section(out_dir))

    page = _page(f"pavi-parcel report: {out_dir.name}", "".join(parts))
    target = out_dir / "report.html"
    with atomic_write(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


def _map_drawer(space: Space, colors: np.ndarray) -> tuple[Callable[..., bytes] | None, str]:
    """How maps of this space are drawn, and what the views are; None and the reason when they cannot be."""
    if not space.is_surface:
        def draw_volume(rows: list[tuple[str, np.ndarray]], width: float = 8.0, fast: bool = True) -> bytes:
            return rf.volume_rows(rows, space, colors, width=width)

        return draw_volume, "axial slices, inferior to superior."
    try:
        assets = rf.load_surface_assets(space)
    except MeshUnavailable:
        return None, space.mesh_note() or f"No {space.name} mesh: maps are not drawn."
    views = rf.project_views(assets)

    def draw_surface(rows: list[tuple[str, np.ndarray]], width: float = 8.0, fast: bool = True) -> bytes:
        return (rf.projected_rows(views, rows, colors) if fast
                else rf.surface_rows(assets, rows, colors, width=width))

    return draw_surface, "left lateral, left medial, right lateral, right medial."


def mean_dice(labels: np.ndarray, reference: np.ndarray, n_networks: int) -> float:
    """Dice overlap of two hard maps, averaged over the networks present in either.

    Parameters
    ----------
    labels, reference : ndarray of int, shape (n_vertices,)
        Network indices 0..K-1.
    n_networks : int

    Returns
    -------
    float
        In [0, 1]; 1 for identical maps.
    """
    dice = dice_per_network(np.asarray(labels), np.asarray(reference), n_networks)
    return float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")


# --------------------------------------------------------------------------- data helpers
def _label_table(out_dir: Path, post: Posterior) -> LabelTable:
    """The exported table (same order and colours as the maps), else the default one."""
    path = label_table_path(out_dir, post.n_networks)
    if path.exists():
        try:
            table = read_label_table(path)
            if table.n_networks == post.n_networks and sorted(table.order) == list(range(post.n_networks)):
                return table
        except (KeyError, ValueError):
            pass
    return default_table(post.n_networks)


def _rows(probs: np.ndarray, post: Posterior) -> list[tuple[str, np.ndarray]]:
    n = post.space.n_total
    hard = to_full_space(np.argmax(probs, axis=1).astype(np.int32) + 1, post.vertex_index, n, 0)
    unc = to_full_space(normalized_entropy(probs).astype(np.float64), post.vertex_index, n, np.nan)
    return [("labels", hard), ("uncertainty", unc)]


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a tab-separated file with a header ([] when absent)."""
    if not Path(path).exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def qc_rows(out_dir: Path) -> list[dict[str, Any]]:
    """Provenance of every stored run (``work/timeseries/*.h5``), sorted by file name."""
    run = saved_settings(out_dir)
    work = run.work_dir if run is not None and run.work_dir is not None else Path(out_dir) / "work"
    rows = []
    for path in sorted((work / "timeseries").glob("*.h5")):
        attrs = read_run_attrs(path)
        if attrs is not None:
            rows.append({"file": path.stem, **attrs})
    return rows


# --------------------------------------------------------------------------- HTML
def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f"<img src=\"data:image/png;base64,{base64.b64encode(png).decode()}\" alt=\"{_e(alt)}\">"


def _figure(png: bytes, caption: str) -> str:
    return f"<figure>{_img(png, caption)}<figcaption>{_e(caption)}</figcaption></figure>"


def _section(title: str, body: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return f"<section id=\"{_e(anchor)}\"><h2>{_e(title)}</h2>{body}</section>"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] | None = None,
           raw: bool = False) -> str:
    head = "".join(f"<th scope=\"col\">{_e(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f" class=\"{classes[i]}\"" if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c if raw else _e(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _page(title: str, body: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<link rel=\"icon\" href=\"data:,\">\n"
            f"<title>{_e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>{_e(title)}</h1>\n<p class=\"muted\">pavi-parcel {_e(__version__)}, generated {stamp}</p>\n"
            f"{body}\n</main>\n</body>\n</html>\n")


def _sessions(labels: Sequence[str]) -> str:
    """``2``, or ``1 (each split in two to calibrate the maps)`` for pseudo-sessions."""
    sessions = {real_session(s) for s in labels}
    return f"{len(sessions)} (each split in two to calibrate the maps)" if is_split(labels) else str(len(sessions))


def _summary(post: Posterior, table: LabelTable, out_dir: Path) -> str:
    settings = post.attrs.get("settings") if isinstance(post.attrs.get("settings"), dict) else {}
    run = saved_settings(out_dir)
    rows = [("Method", post.attrs.get("method", "unknown")), ("Networks (K)", post.n_networks),
            ("Space", post.space.name), ("Subjects", len(post.subjects)), ("Sessions", _sessions(post.sessions)),
            ("Modelled vertices / voxels", len(post.vertex_index)),
            ("Seed", post.attrs.get("seed", settings.get("seed", "n/a" if run is None else run.seed))),
            ("Input dataset", settings.get("bids_dir", "n/a") if run is None else run.bids_dir)]
    return _section("Summary", _table(["Item", "Value"], [(k, v) for k, v in rows]))


def _label_section(table: LabelTable) -> str:
    rows = []
    for i, (name, color) in enumerate(zip(table.names, table.hex_colors)):
        d = table.dice[i] if table.dice is not None else np.nan
        rows.append((str(i + 1), f"<span class=\"swatch\" style=\"background:{color}\"></span>{_e(name)}",
                     _e(color), str(int(table.order[i])), "n/a" if np.isnan(d) else f"{d:.3f}"))
    return _section("Networks", _table(["Label", "Name", "Colour", "Posterior index", "Dice with reference"],
                                       rows, raw=True))


def _elbo_section(out_dir: Path, rf: Any) -> str:
    rows = read_tsv(Path(out_dir) / "model" / "elbo.tsv")
    try:
        step = np.asarray([float(r["step"]) for r in rows])
        elbo = np.asarray([float(r["elbo"]) for r in rows])
        seconds = np.asarray([float(r["seconds"]) for r in rows]) if rows and "seconds" in rows[0] else None
    except (KeyError, ValueError):
        rows = []
    if not rows:
        return _section("ELBO", "<p class=\"muted\">No ELBO log (model/elbo.tsv) found.</p>")
    return _section("ELBO", _figure(rf.elbo_figure(step, elbo, seconds),
                                    f"Evidence lower bound during fitting; final value {elbo[-1]:.4g}."))


def _dice_section(subjects: Sequence[str], dice: np.ndarray, rf: Any) -> str:
    if not len(subjects):
        return _section("Subject versus group", "<p class=\"muted\">No subjects.</p>")
    rows = [(f"sub-{bare_label(s)}", f"{d:.3f}") for s, d in zip(subjects, dice)]
    table = _table(["Subject", "Mean Dice with group"], rows)
    fig = _figure(rf.dice_figure([bare_label(s) for s in subjects], dice),
                  "Dice overlap of each subject's hard map with the group hard map, averaged over networks.")
    return _section("Subject versus group", fig + f"<details><summary>Table</summary>{table}</details>")


def _qc_section(out_dir: Path) -> str:
    """The quality gates' verdict on every run (``qc/runs.tsv``): what was excluded and why, then every run."""
    rows = read_tsv(qc_table_path(out_dir))
    if not rows:
        return _section("Quality control", "<p class=\"muted\">No QC table (qc/runs.tsv) found.</p>")
    stored = qc_rows(out_dir)
    strategy = _strategy(stored[0].get("strategy")) if stored else "n/a"
    excluded = [r for r in rows if r.get("status") == "excluded"]
    subjects = sorted({r["subject"] for r in rows})
    left = sorted({r["subject"] for r in rows if r.get("status") == "included"})
    gone = [s for s in subjects if s not in left]
    summary = (f"<p>{len(rows)} runs of {len(subjects)} subjects; <b>{len(excluded)} excluded</b>"
               + (f", and {len(gone)} subject(s) without a run left ({_e(', '.join('sub-' + s for s in gone))})"
                  if gone else "") + f". Confounds: {_e(strategy)}. The table is <code>qc/runs.tsv</code>.</p>")
    parts = [c for c in rows[0] if c.startswith("fraction_")]
    header = ["Run", "Status", "Reason", "Frames kept", "Mean FD (mm)", "tSNR",
              *(f"Valid {c.removeprefix('fraction_')}" for c in parts)]

    def cells(r: dict[str, str]) -> list[str]:
        return [r["run"], r["status"], r["reason"], f"{r['frames_kept']}/{r['frames_total']}", r["mean_fd"],
                r["tsnr"], *(r[c] for c in parts)]

    def number(value: str) -> float:
        return float(value) if value not in ("", "n/a") else np.nan

    run = saved_settings(out_dir)
    gates = (run.qc.max_mean_fd, run.qc.min_tsnr) if run is not None else (None, None)
    figure = rf.qc_figure(np.array([number(r["mean_fd"]) for r in rows]), np.array([number(r["tsnr"]) for r in rows]),
                          np.array([r.get("status") == "excluded" for r in rows]), *gates)
    body = summary + _figure(figure, "Mean FD against tSNR per run; dashed: the gates (qc.max_mean_fd, qc.min_tsnr).")
    if excluded:
        body += _table(header, [cells(r) for r in excluded], ["warn"] * len(excluded))
    body += f"<details><summary>Every run</summary>{_table(header, [cells(r) for r in rows])}</details>"
    return _section("Quality control", body)


STRATEGY_KEYS = ("motion", "wm_csf", "global_signal", "compcor", "scrub", "fd_threshold", "std_dvars_threshold",
                 "high_pass", "low_pass")


def _strategy(value: Any) -> str:
    """Short description of a confounds strategy (the main choices and the number of regressors)."""
    if isinstance(value, dict):
        chosen = value.get("strategy")
        parts = ["+".join(map(str, chosen))] if isinstance(chosen, (list, tuple)) else []
        active = set(map(str, chosen)) if isinstance(chosen, (list, tuple)) else None
        for key in STRATEGY_KEYS:
            family = {"fd_threshold": "scrub", "std_dvars_threshold": "scrub", "low_pass": "high_pass"}.get(key, key)
            if key in value and value[key] is not None and (active is None or family in active):
                parts.append(f"{key}={value[key]}")
        if isinstance(value.get("confound_columns"), list):
            parts.append(f"{len(value['confound_columns'])} regressors")
        return "; ".join(parts) if parts else json.dumps(value)[:200]
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "n/a" if value is None else str(value)


METRIC_COLUMNS = {
    "source": "fit: training subject; apply: added by pavi-parcel apply",
    "ari": "adjusted Rand index with the planted labels (group_ari: the group atlas's)",
    "dice": "mean Dice with the planted labels after matching (group_dice: the group atlas's)",
    "ece": "expected calibration error of the soft map (0 = calibrated)",
    "accuracy": "fraction of vertices whose most probable network is the planted one",
    "confidence": "mean probability of the most probable network",
    "n_sessions": "training sessions of the subject",
    "within_dice": "mean Dice between the subject's single-session maps (Kong 2019)",
    "between_dice": "mean Dice between the subject's first-session map and other subjects' (Kong 2019)",
    "homogeneity": "mean within-network correlation of held-out time series (group_homogeneity: group atlas)",
    "heldout_loglik": "expected log-likelihood per vertex of held-out fingerprints under the map, "
                      "sum_l q(l) [log C(kappa) + kappa mu_l.x] (group_heldout_loglik: group atlas)",
    "heldout_pred_loglik": "log predictive density per vertex, log sum_l q(l) vMF(x; mu_l, kappa): also "
                           "rewards calibrated uncertainty (group_heldout_pred_loglik: group atlas)",
    "loglik_data": "held-out data: heldout-runs (--heldout) or leave-one-session-out (training sessions)",
}
METRIC_PAIRS = (("within_dice", "between_dice", "Within- vs between-subject Dice"),
                ("homogeneity", "group_homogeneity", "Held-out homogeneity, individual vs group"),
                ("heldout_loglik", "group_heldout_loglik", "Held-out log-likelihood per vertex, individual vs group"),
                ("heldout_pred_loglik", "group_heldout_pred_loglik",
                 "Held-out log predictive density per vertex, individual vs group"),
                ("ari", "group_ari", "ARI with truth, individual vs group"))


def _metrics_section(out_dir: Path) -> str:
    """``model/metrics.tsv`` (``pavi-parcel validate``): the mean comparisons, the table and a legend."""
    rows = read_tsv(Path(out_dir) / "model" / "metrics.tsv")
    if not rows:
        return ""
    header = list(rows[0].keys())
    mean = next((r for r in rows if r.get("subject") == "mean"), None)
    lines = []
    for own, other, title in METRIC_PAIRS:
        a, b = _number(mean, own), _number(mean, other)
        if a is not None and b is not None:
            verdict = "individual maps ahead" if a > b else "individual maps not ahead"
            lines.append(f"<li>{_e(title)}: <b>{a:.6g}</b> vs {b:.6g} (cohort means, difference {a - b:+.3g}; "
                         f"{verdict})</li>")
    summary = f"<ul>{''.join(lines)}</ul>" if lines else ""
    legend = [(h, METRIC_COLUMNS[h]) for h in header if h in METRIC_COLUMNS]
    notes = (f"<details><summary>Columns</summary>{_table(['Column', 'Meaning'], legend)}</details>"
             if legend else "")
    return _section("Metrics", summary + _table(header, [[r.get(h, "") for h in header] for r in rows]) + notes)


def _number(row: dict[str, str] | None, key: str) -> float | None:
    """A finite float from a TSV row, else None."""
    try:
        value = float((row or {}).get(key) or "nan")
    except ValueError:
        return None
    return value if np.isfinite(value) else None
