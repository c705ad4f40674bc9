"""Tables and plots of the speed race (``scripts/bench_race.py``), from its saved results alone.

The 1,000-subject row is extrapolated, not measured: a method's per-step cost is fitted as
``a + b * S`` through the measured sizes, and its steps to a level as the measured epochs to that
level at the largest size times the steps of one epoch at 1,000 subjects (VB-EM: the same
iterations). Both assumptions are stated in the table's caption.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from bench_race import ARI_LEVELS, LABELS, METHODS

EXTRAPOLATED_SIZE = 1000
#: levels of measure (i): (key, label, fraction, of what)
LEVELS = (("gain_1", "1 % of the best gain", 0.01, "gain"), ("gain_01", "0.1 % of the best gain", 0.001, "gain"),
          ("elbo_01", "0.1 % of the ELBO", 0.001, "elbo"))


# --------------------------------------------------------------------------- the measures
def first_time(trace: list[dict], key: str, level: float) -> float:
    """Training time of the first evaluation at or above ``level`` (0 at the start, inf when never)."""
    for row in trace:
        if row[key] >= level:
            return float(row["seconds"])
    return math.inf


def extrapolate_time(trace: list[dict], best: float, within: float, last: int = 4) -> float:
    """Training time at which a run that did not get ``within`` of ``best`` would, extrapolated.

    The gap to ``best`` over the last ``last`` evaluations is fitted as a power of the training
    time (a straight line in log-log). inf ("stalled") when the gap shrinks more slowly than
    ``t^-0.1`` or the answer lies beyond 100 times the run's length.
    """
    rows = [r for r in trace[1:] if r["seconds"] > 0 and best - r["elbo"] > 0][-last:]
    if len(rows) < 3:
        return math.inf
    slope, intercept = np.polyfit(np.log([r["seconds"] for r in rows]), np.log([best - r["elbo"] for r in rows]), 1)
    if slope > -0.1:
        return math.inf
    t = float(math.exp((math.log(within) - intercept) / slope))
    return t if t <= 100 * trace[-1]["seconds"] else math.inf


def paired_se(a: dict, b: dict, n_subjects: int) -> float:
    """Standard error of the difference of two scores on the same evaluated subjects."""
    d = np.asarray(a["per_subject"]) - np.asarray(b["per_subject"])
    n = len(d)
    if n < 2 or n >= n_subjects:
        return 0.0
    return float(n_subjects * np.std(d, ddof=1) / math.sqrt(n) * math.sqrt(1 - n / n_subjects))


def summarise(rows: dict[str, dict]) -> dict:
    """Measures (i)-(iv) of every method of one cohort."""
    from bench_race import converged_at

    start = next(iter(rows.values()))["start_elbo"]
    best_method = max(rows, key=lambda m: max(r["elbo"] for r in rows[m]["trace"]))
    best_row = max(rows[best_method]["trace"], key=lambda r: r["elbo"])
    best = best_row["elbo"]
    gain = best - start
    out = {"start_elbo": start, "best_elbo": best, "best_method": best_method, "gain": gain,
           "best_se": best_row["se"], "methods": {}}
    for m, res in rows.items():
        tr = res["trace"]
        conv = converged_at(tr)
        final = tr[-1]
        row = {"levels": {}}
        for key, _, frac, of in LEVELS:
            within = frac * (gain if of == "gain" else abs(best))
            t = first_time(tr, "elbo", best - within)
            row["levels"][key] = {"seconds": t, "extrapolated": math.isinf(t) and of == "gain",
                                  "steps": next((r["steps"] for r in tr if r["seconds"] >= t), math.nan)}
            if math.isinf(t) and of == "gain":
                row["levels"][key]["seconds"] = extrapolate_time(tr, best, within)
        row.update({
            "t_converged": conv["seconds"] if conv else math.inf,
            "final_fraction_of_gain": (final["elbo"] - start) / gain if gain > 0 else math.nan,
            "final_gap_se": paired_se(final, best_row, res.get("n_subjects", 1)),
            "ari": {lvl: first_time(tr, "ari", lvl) for lvl in ARI_LEVELS},
            "peak_ari": max(r["ari"] for r in tr), "final_ari": final["ari"],
            "seconds_per_step": res["train_seconds"] / max(res["steps"], 1), "steps": res["steps"],
            "epochs": res["steps"] / res["steps_per_epoch"], "train_seconds": res["train_seconds"],
            "lr": res.get("lr"), "params": res["params"]})
        out["methods"][m] = row
    return out


# --------------------------------------------------------------------------- rendering
def _s(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "not reached"
    return f"{v / 60:.1f} min" if v >= 600 else f"{v:.1f} s" if v < 100 else f"{v:.0f} s"


def _level(row: dict, key: str, ref: dict | None) -> str:
    """A time to a level, marked when extrapolated, with its ratio to PAVI-E's."""
    lv = row["levels"][key]
    t = lv["seconds"]
    if math.isinf(t):
        return f"not in {_s(row['train_seconds'])}" + ("; stalled" if lv["extrapolated"] else "")
    text = f"about {_s(t)} (extrapolated)" if lv["extrapolated"] else _s(t)
    if ref is not None and ref is not row:
        r = ref["levels"][key]["seconds"]
        if math.isfinite(r) and r > 0:
            text += f", {t / r:.1f}x"
    return text


def _ari(row: dict, lvl: float, trace: list[dict]) -> str:
    t = row["ari"][lvl]
    return "at the start" if t == 0 and trace[0]["ari"] >= lvl else _s(t)


def cohort_table(n: str, rows: dict, summary: dict) -> list[str]:
    """Markdown rows of one cohort: measures (i) to (iv) for every method."""
    out = []
    ref = summary["methods"].get("pavi_e")
    for m in [m for m in METHODS if m in rows]:
        s, res = summary["methods"][m], rows[m]
        lr = f"{s['lr']:g}" if s.get("lr") is not None else "-"
        if res.get("sweep"):
            lr += " of " + ", ".join(f"{x['lr']:g}" for x in sorted(res["sweep"], key=lambda x: x["lr"]))
        cells = [n, LABELS[m], lr, *(_level(s, key, ref) for key, *_ in LEVELS),
                 f"{_s(s['t_converged'])} ({s['final_fraction_of_gain']:.4f} "
                 f"± {s['final_gap_se'] / summary['gain']:.4f})",
                 *(_ari(s, lvl, res["trace"]) for lvl in ARI_LEVELS), f"{s['peak_ari']:.3f} / {s['final_ari']:.3f}",
                 f"{s['seconds_per_step'] * 1e3:.0f} ms", f"{s['steps']:,} ({s['epochs']:.1f})",
                 f"{s['params']['learned']:,}", f"{res.get('peak_rss_gb', math.nan):.2f}"]
        out.append("| " + " | ".join(cells) + " |")
    return out


def extrapolate(results: dict, size: int = EXTRAPOLATED_SIZE, key: str = "gain_1") -> dict[str, dict]:
    """Per-step cost, steps and time to level ``key`` at ``size`` subjects, from the measured sizes."""
    sizes = sorted(int(n) for n in results)
    largest = str(sizes[-1])
    summ = summarise(results[largest])
    out = {}
    for m in [m for m in METHODS if m in results[largest]]:
        ns = [n for n in sizes if m in results[str(n)]]
        costs = [summarise(results[str(n)])["methods"][m]["seconds_per_step"] for n in ns]
        slope, intercept = np.polyfit(ns, costs, 1) if len(ns) > 1 else (0.0, costs[0])
        per_step = float(max(intercept + slope * size, min(costs)))
        row, res = summ["methods"][m], results[largest][m]
        spe_large = res["steps_per_epoch"]
        spe = 1 if m == "vbem" else spe_large * size / int(largest)
        level = row["levels"][key]
        steps = level["seconds"] / row["seconds_per_step"] / spe_large * spe
        out[m] = {"seconds_per_step": per_step, "steps": steps, "seconds": per_step * steps,
                  "from_extrapolated_level": level["extrapolated"]}
    return out


INTRO = """# Speed race: PAVI against tuned, converged off-the-shelf VI

Generated by `scripts/bench_race.py` (the command is below). Cohorts: fingerprints simulated
directly (`simulate_fingerprint_store`, fsaverage5, 18,715 cortical vertices, 1,175 seeds,
2 sessions, K = 17, SNR 0.8, seed 0), so every method is scored against planted individual maps.

- **One model, one start, one machine.** Every method fits the package's MS-HBM without the Potts
  term and without label calibration (both would be extra for some methods only). They start from
  the same group k-means state (`InitState`, saved next to the store): PAVI-F and mean-field SVI
  start at exactly PAVI-E's initial ELBO (tested), Pyro's point estimates are that start's mean
  directions, prior and profiles (tested), and VB-EM starts from the same k-means labels. One torch
  thread per fit, one fit at a time, each method in its own process.
- **Methods.** PAVI-E and PAVI-F: the package's training loop, default learning rate. Mean-field SVI:
  the package's free-parameter guide with q(theta) in closed form (PAVI's form), its label logits
  started from PAVI-E's initial labels. Pyro SVI: the same model written in Pyro 1.9
  (`scripts/race_pyro.py`), labels enumerated by `TraceEnum_ELBO`, an `AutoDelta` guide on psi, nu
  and theta (theta with a Dirichlet(2) prior so that its MAP exists, as VB-EM's pseudo-count), Pyro's
  plate subsampling and Adam. VB-EM: the package's closed-form coordinate ascent with one sigma and
  one eps for all networks, as in this model. The gradient methods use the same minibatches
  (4 subjects x one ~3,700-vertex patch per step, every subject-patch pair once per epoch).
- **Learning rates.** SVI and Pyro each train at four rates for a short sweep time; the rate with
  the highest ELBO at the end of the sweep continues (same run) to convergence or the budget.
- **One yardstick** (`scripts/race_eval.py`). Each method's state is read as a state of the
  package's variational family and scored by the exact ELBO of a fixed subset of subjects, scaled
  to the cohort (unbiased; the estimate's standard error uses the finite-population correction,
  tested against the exact ELBO). Pyro's MAP points become mean directions whose concentrations
  are those of the closed-form coordinate update, given the exact label posterior; VB-EM's and
  Pyro's q(theta) is the closed-form Dirichlet of their label counts. ARI = mean over the same
  subjects against the planted maps. Evaluation time is excluded; evaluations are spaced by a
  factor sqrt(2) in training time, so a time to a level is an upper bound within that factor.
- **Convergence** (one rule for all): the first evaluation at which doubling the training time
  changed the ELBO by less than 0.1 % of the gain made so far; a falling ELBO runs on.
- **Measures.** (i) training time to within 1 % and 0.1 % of the best ELBO gain any method
  reached (gain = best ELBO - common start ELBO), and to within 0.1 % of the ELBO itself (a much
  looser level: the ELBO's magnitude is large); (ii) time to the method's own convergence; (iii) time to
  mean ARI 0.85 and 0.90; (iv) per-step cost (VB-EM: per iteration over all subjects) and steps.
  A run that did not reach a gain level in its budget gets a time extrapolated from its last four
  evaluations (gap to the best ELBO as a power of time), marked as such, or "stalled" when its gap
  is not closing (slower than t^-0.1, or beyond 100 times its run). The ratio is the method's time
  over PAVI-E's.
"""


def statement(results: dict) -> str:
    """The race's result at its largest measured size, in one quotable sentence."""
    results = {n: r for n, r in results.items() if n.isdigit()}
    n = max(results, key=int)
    summary = summarise(results[n])
    summ = summary["methods"]
    pe = summ["pavi_e"]

    def reached(m: str, key: str) -> str:
        row = summ[m]
        lv = row["levels"][key]
        t = lv["seconds"]
        if math.isinf(t):
            return (f"{LABELS[m]} never in {_s(row['train_seconds'])} "
                    f"({row['final_fraction_of_gain']:.1%} of the gain at its end)")
        text = f"{LABELS[m]} {'about ' if lv['extrapolated'] else ''}{_s(t)}"
        text += " (extrapolated" if lv["extrapolated"] else ""
        r = pe["levels"][key]["seconds"]
        if m != "pavi_e" and math.isfinite(r) and r > 0:
            text += f"{', ' if lv['extrapolated'] else ' ('}{t / r:.1f}x PAVI-E's time)"
        elif lv["extrapolated"]:
            text += ")"
        return text

    order = [m for m in ("pavi_e", "vbem", "svi", "pyro", "pavi_f") if m in summ]
    return (f"On {n} simulated subjects (fsaverage5, K = 17, one CPU thread per fit, every method from the same "
            f"start and scored by the same ELBO), the best ELBO was {LABELS[summary['best_method']]}'s; to within "
            f"1 % of that gain over the start: " + ", ".join(reached(m, "gain_1") for m in order)
            + "; to within 0.1 %: " + ", ".join(reached(m, "gain_01") for m in order) + ".")


def write_report(results: dict, out: Path, command: str) -> str:
    """``OUT/bench_race.md`` and the two figures; returns the markdown."""
    results = {n: r for n, r in results.items() if n.isdigit()}
    sizes = sorted(results, key=int)
    summaries = {n: summarise(results[n]) for n in sizes}
    header = ["subjects", "method", "learning rate (swept)", *(f"(i) to within {label} (/ PAVI-E)"
                                                               for _, label, *_ in LEVELS),
              "(ii) own convergence (final fraction of the best gain ± SE)",
              *(f"(iii) to ARI {lvl:.2f}" for lvl in ARI_LEVELS), "peak / final ARI", "(iv) per step",
              "steps (epochs)", "learned params", "peak RSS (GB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for n in sizes:
        lines += cohort_table(n, results[n], summaries[n])
    notes = []
    for n in sizes:
        s = summaries[n]
        any_row = next(iter(results[n].values()))
        notes.append(f"- {n} subjects: start ELBO {s['start_elbo']:.7g}, best {s['best_elbo']:.7g} "
                     f"({LABELS[s['best_method']]}), gain {s['gain']:.4g}; ELBO on {any_row['eval_subjects']} "
                     f"subjects, standard error of the best estimate {s['best_se']:.3g} "
                     f"({s['best_se'] / s['gain']:.2%} of the gain; every state is scored on the same subjects, "
                     "so differences between states are paired and far less noisy: column (ii)'s ± is the SE of "
                     f"the gap to the best); budget {_s(any_row['budget'])} of training per run.")
    ext = extrapolate(results) if len(sizes) > 1 else {}
    ext_lines = []
    if ext:
        ext_lines = [f"Extrapolated to {EXTRAPOLATED_SIZE} subjects (not measured): per-step cost linear in the number "
                     "of subjects through the measured sizes; steps = the epochs to within 1 % of the best gain at the "
                     "largest "
                     f"measured size times the steps of one epoch at {EXTRAPOLATED_SIZE} subjects (VB-EM: the same "
                     "iterations).",
                     "", "| method | per step (extrapolated) | steps to within 1 % of the best gain | time |",
                     "|---|---|---|---|"]
        for m, row in ext.items():
            flag = " (level itself extrapolated at the largest size)" if row["from_extrapolated_level"] else ""
            steps = f"{row['steps']:,.0f}" if math.isfinite(row["steps"]) else "n/a"
            ext_lines.append(f"| {LABELS[m]} | {row['seconds_per_step'] * 1e3:.0f} ms | {steps} "
                             f"| {_s(row['seconds'])}{flag} |")
    text = "\n".join([
        INTRO, f"Command: `{command}`", "", "**Result.** " + statement(results), "",
        *lines, "", *notes, "", *ext_lines, "",
        "![ELBO versus training time](bench_race_elbo.png)", "",
        "![Gap to the best ELBO versus training time, log scale; dotted: the 1 % and 0.1 % levels](bench_race_gap.png)",
        "",
        "![ARI versus training time](bench_race_ari.png)", ""])
    (out / "bench_race.md").write_text(text)
    _figures(results, summaries, out)
    print(text)
    return text


def _figures(results: dict, summaries: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results, key=int)
    for key, ylabel, name in (("elbo", "fraction of the best ELBO gain", "bench_race_elbo.png"),
                              ("gap", "gap to the best ELBO (fraction of the gain)", "bench_race_gap.png"),
                              ("ari", "ARI against the planted maps (mean)", "bench_race_ari.png")):
        fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
        for ax, n in zip(axes[0], sizes):
            s = summaries[n]
            for m in [m for m in METHODS if m in results[n]]:
                tr = results[n][m]["trace"]
                t = np.maximum([r["seconds"] for r in tr], 0.3)
                frac = np.array([(r["elbo"] - s["start_elbo"]) / s["gain"] for r in tr])
                y = {"elbo": frac, "gap": np.maximum(1 - frac, 1e-5), "ari": [r["ari"] for r in tr]}[key]
                ax.plot(t, y, "o-", ms=3, label=LABELS[m])
            if key == "gap":  # the levels of measure (i), on a scale where they can be seen
                for lvl in (1e-2, 1e-3):
                    ax.axhline(lvl, ls=":", c="k", lw=0.8)
                ax.set_yscale("log")
            elif key == "elbo":
                ax.axhline(1 - 1e-3, ls=":", c="k", lw=0.8)
                ax.set_ylim(max(-0.1, ax.get_ylim()[0]), 1.02)
            else:
                for lvl in ARI_LEVELS:
                    ax.axhline(lvl, ls=":", c="k", lw=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("training time (s, one thread)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{n} subjects")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)


__all__ = ["extrapolate", "statement", "write_report"]
