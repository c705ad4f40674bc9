"""Parent recovery of nested scales against the planted nesting of a simulation.

A nested coarse scale (``model.nested=true``) stores the parent it chose for every fine network
(``parents`` in its ``model/posterior.h5``). Both scales' networks are matched to the planted
ones (the fine fit to the planted labels, the coarse fit to the planted labels merged into their
planted parents), and a fine network's parent is right when its matched planted network's parent
is the coarse network matched to the chosen parent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pavi_parcel.io.layout import posterior_path
from pavi_parcel.simulate.truth import coarsened, load_nesting, load_truth
from pavi_parcel.stores.posterior import read_posterior

from .matching import truth_mapping


def parent_recovery(fine_dir: Path, coarse_dir: Path, truth_dir: Path) -> float | None:
    """Fraction of the fine networks whose chosen parent is the planted one (None without planted nesting).

    Parameters
    ----------
    fine_dir, coarse_dir : Path
        The scales' folders (``OUT_DIR/pavi<K>``); the coarse one nested under the fine one.
    truth_dir : Path
        The simulation's ``truth/`` (planted at the fine scale, with ``nesting.json``).
    """
    coarse = read_posterior(posterior_path(coarse_dir))
    planted = load_nesting(truth_dir).get(coarse.n_networks)
    chosen = coarse.attrs.get("parents")
    if planted is None or chosen is None:
        return None
    chosen = np.asarray(json.loads(chosen) if isinstance(chosen, str) else chosen, dtype=np.int64)
    truth = load_truth(truth_dir)
    fine = read_posterior(posterior_path(fine_dir))
    fine_map = truth_mapping(fine, truth)[2]
    coarse_map = truth_mapping(coarse, coarsened(truth, planted))[2]
    right = [coarse_map[chosen[f]] + 1 == planted[fine_map[f]]
             for f in range(fine.n_networks) if fine_map[f] < truth.n_networks]
    return float(np.mean(right)) if right else None


__all__ = ["parent_recovery"]
