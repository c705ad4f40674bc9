"""The benchmark report is assembled from saved section results alone (no fits run here)."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield importlib.import_module("bench_report"), importlib.import_module("bench_speed")
    finally:
        sys.path.remove(str(SCRIPTS))


def _meta(section: str) -> dict:
    return {"section": section, "preset": "full", "command": f"python scripts/benchmark.py --sections {section}",
            "machine": {"cpus": 2, "cpus_usable": 2, "cpu_model": "Test CPU", "memory_gb": 8.0, "torch": "9.9",
                        "python": "3.11", "numpy": "2", "pavi_parcel": "0.1.0", "git": "abc123",
                        "load_average": [0.5, 0.5, 0.5]},
            "started": "2030-01-01T00:00:00+00:00", "seed": 0, "section_wall_s": 120.0}


def _acc(method: str, **kw) -> dict:
    base = dict(method=method, ok=True, ari=0.8, min_ari=0.7, dice=0.75, ece=0.05, accuracy=0.9, confidence=0.92,
                group_ari=0.6, wall_s=30.0, peak_rss_gb=0.5, n_steps=100, converged=True)
    base.update(kw)
    return base


def _results(modules) -> dict:
    _, speed = modules
    svi = {"trace": [(0.0, 0, 0.0), (2.0, 10, 50.0), (8.0, 40, 99.5), (16.0, 80, 100.0)],
           "params": {"learned": 4118913, "closed_form_theta": 0}, "steps": 80}
    pavi = {"trace": [(0.0, 0, 0.0), (1.0, 5, 95.0), (2.0, 10, 99.6)],
            "params": {"learned": 23, "closed_form_theta": 318155}, "steps": 10}
    vbem = {"trace": [(5.0, 1, 10.0), (9.0, 2, 19.5), (13.0, 3, 20.0)], "params": {"learned": 0,
            "closed_form_local": 1000}, "n_iter": 3}
    runs = {"svi": svi, "pavi_e": pavi}
    snr = dict(_meta("snr"), config={"n_subjects": 20, "n_sessions": 2, "n_networks": 17, "fit": {},
                                     "svi_level": 0.8, "svi_fit": {}}, jobs=2,
               rows=[dict(_acc("pavi_e"), snr=0.4), dict(_acc("pavi_e", ari=0.9), snr=1.6),
                     dict(_acc("kmeans", ari=0.6), snr=0.4),
                     {"method": "vbem", "snr": 0.4, "ok": False, "error": "boom", "wall_s": 1.0, "peak_rss_gb": 0.1}])
    elbo = dict(_meta("elbo"), config={"n_networks": 17, "match_start_max": 100, "n_evals": 4, "eval_subjects": 3,
                                       "svi_lr": 0.05, "lr": 0.02, "vbem_max_iter": 10, "threads": 1},
                sizes=[{"n_subjects": 10, "budget": 16.0, "matched_start": True,
                        "runs": {m: dict(r, ok=True, peak_rss_gb_process=0.7) for m, r in
                                 {**runs, "vbem": vbem}.items()},
                        "summary": speed.speed_summary(runs), "vbem_summary": speed.vbem_summary(vbem)}])
    scale_rows = [dict(n_subjects=100, mode="full fit", ok=True, steps=500, epochs=4.0, train_seconds=400.0,
                       wall_s=600.0, peak_rss_gb=1.5, converged=True, params={"learned": 23, "closed_form_theta": 9},
                       n_vertices=18715, n_seeds=1174, n_sessions=2, store_gb=0.5, store_seconds=60.0, store_jobs=2,
                       steps_per_epoch=125),
                  dict(n_subjects=1000, mode="capped training", cap_minutes=6.0, ok=True, steps=700, epochs=0.56,
                       train_seconds=360.0, wall_s=400.0, peak_rss_gb=3.0, params={"learned": 23},
                       n_vertices=18715, n_seeds=1174, n_sessions=2, store_gb=5.0, store_seconds=600.0,
                       store_jobs=2, steps_per_epoch=1250, init_seconds=20.0, pass_seconds_per_subject=1.0,
                       calibration_seconds=30.0)]
    sys.path.insert(0, str(SCRIPTS))
    try:
        importlib.import_module("benchmark")._estimate_capped(scale_rows, 17)
    finally:
        sys.path.remove(str(SCRIPTS))
    scale = dict(_meta("scale"), config={"n_networks": 17, "threads": 0, "store_jobs": 2, "full_fit_max": 100,
                                         "cap_minutes": 6.0, "pass_subjects": 5}, rows=scale_rows)
    return {"snr": snr, "elbo": elbo, "scale": scale}


def test_speed_summary_planted_ratio(modules):
    results = _results(modules)
    summ = results["elbo"]["sizes"][0]["summary"]
    assert summ["svi_gain"] == 100.0
    # SVI first passes 99 at t=8 and PAVI-E at t=2: ratio 4; 90 %: SVI t=8, PAVI-E t=1
    assert summ["methods"]["pavi_e"]["t99"] == 2.0 and summ["methods"]["svi"]["t99"] == 8.0
    assert summ["methods"]["pavi_e"]["ratio_t99"] == 4.0 and summ["methods"]["pavi_e"]["ratio_t90"] == 8.0
    assert results["elbo"]["sizes"][0]["vbem_summary"] == {"t90": 9.0, "t99": 13.0}


def test_capped_estimate(modules):
    row = _results(modules)["scale"]["rows"][1]
    per_epoch = 1250 * 360.0 / 700 + 30.0
    assert math.isclose(row["seconds_per_epoch"], per_epoch)
    assert row["epochs_assumed"] == 4
    assert math.isclose(row["est_full_fit_s"], 20.0 + 4 * per_epoch + 1000 * 1.0 + 30.0)
    assert math.isclose(row["est_peak_gb"], 3.0 + 1000 * 18715 * 17 * 4 / 2**30)


def test_report_from_saved_sections(modules, tmp_path):
    report, _ = modules
    results = json.loads(json.dumps(_results(modules)))  # as read back from the JSON files
    path = report.write_report(results, tmp_path / "benchmarks.md")
    text = path.read_text()
    for name in ("snr", "elbo", "scale"):
        assert (tmp_path / f"benchmarks_{name}.png").stat().st_size > 1000
        assert f"--sections {name}" in text
    assert "Not run yet: `python scripts/benchmark.py --sections minutes`" in text
    assert "| 0.4 | PAVI-E | 0.800 | 0.700 |" in text
    assert "| 0.4 | VB-EM | failed: boom |" in text
    assert "| 10 | PAVI-E | 16 s | 1 s | 2 s | 8.0x | 4.0x | 23 | 318,155 |" in text
    assert "| 100 subjects x 2 sessions, K=17, D~1,175: fit within 15 min | 10.0 min | met |" in text
    assert "estimated full fit" in text and "torch 9.9" in text and "Test CPU" in text
    assert "Quick run" not in text


def _fit(method: str, beta: str, ari: float, ece: float, chosen: float, split: str = "auto") -> dict:
    return dict(cohort="default", split=split, method=method, potts_beta=beta, ari=ari, ece=ece, confidence=0.9,
                accuracy=0.9, beta=chosen, gamma=0.5, sessions=["1", "2"], seconds=40.0, peak_mib=800.0)


def test_smoothing_section_reports_the_gain_the_ceiling_and_the_time_ratio(modules, tmp_path):
    report, _ = modules
    smoothing = dict(_meta("smoothing"), config={"cohorts": ["default"], "n_subjects": 10},
                     rows=[_fit("pavi_e", "0", 0.834, 0.016, 0), _fit("pavi_e", "auto", 0.854, 0.012, 1),
                           _fit("vbem", "0", 0.830, 0.091, 0), _fit("vbem", "auto", 0.831, 0.065, 2)],
                     ceilings=[{"cohort": "default", "ari": 0.956, "accuracy": 0.978}],
                     timing={"cohort": "default", "repeats": 3,
                             "seconds": {"0": [40.0, 44.0, 42.0], "auto": [50.0, 60.0, 52.5]}},
                     n_subjects=10, simulation_seed=3, cpus=2)
    text = report.write_report({"smoothing": smoothing}, tmp_path / "benchmarks.md").read_text()
    assert "## 5. Spatial smoothness" in text and "--sections smoothing" in text
    assert "| default | 0.834 | 0.854 (+0.020) | 0.831 | 0.956 | 0.012 | 1 |" in text
    assert "| default | vbem | auto | 2 | 0.831 | 0.065 |" in text
    assert "| auto | 50.0, 60.0, 52.5 | 52.5 |" in text and "(auto / 0): **1.25x**" in text
