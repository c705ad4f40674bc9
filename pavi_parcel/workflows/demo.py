"""The demo: simulate a small cohort with planted networks, fit it, export the maps, build the report.

It is the README's first command and a smoke test of the whole product: a few minutes on
a 2-core laptop, no download.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pavi_parcel.settings.compose import compose
from pavi_parcel.simulate import simulate_dataset

from .pipeline import run

log = logging.getLogger(__name__)

DEMO_SUBJECTS = 6
DEMO_SESSIONS = 2
DEMO_FRAMES = 150
DEMO_NETWORKS = 7
DEMO_FIT_MINUTES = 1.0  # training cap: the demo's fit converges to within a few percent of its ELBO by then


def run_demo(out_dir: Path, n_subjects: int = DEMO_SUBJECTS, seed: int = 0) -> Path:
    """Simulate, fit, export and report; return the path of the HTML report.

    Parameters
    ----------
    out_dir : Path
        Receives ``sim/`` (the simulated fMRIPrep dataset and its planted truth) and
        ``pavi/`` (the BIDS-derivatives output of the fit).
    n_subjects : int
        Subjects to simulate (two sessions each, fsaverage5, 7 networks).
    seed : int
        Seed of the simulation and of the fit.

    Returns
    -------
    Path
        ``out_dir/pavi/report.html``.
    """


    out_dir = Path(out_dir).expanduser().resolve()
    sim = simulate_dataset(out_dir / "sim", n_subjects=n_subjects, n_sessions=DEMO_SESSIONS,
                           n_frames=DEMO_FRAMES, n_networks=DEMO_NETWORKS, seed=seed)
    result_dir = out_dir / "pavi"
    cfg = compose([f"bids_dir={sim.bids_dir}", f"out_dir={result_dir}", f"seed={seed}",
                   f"model.n_networks={DEMO_NETWORKS}", f"fit.max_minutes={DEMO_FIT_MINUTES}",
                   "export.reference=yeo7"])
    run(cfg)
    return result_dir / "report.html"
