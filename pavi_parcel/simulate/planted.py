"""Fingerprint stores of the model's own sampler (:mod:`pavi_parcel.model.planted`), for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pavi_parcel.fingerprints.compute import binarize_top_fraction
from pavi_parcel.model.planted import PlantedData
from pavi_parcel.spaces import VolumeSpace
from pavi_parcel.stores.fingerprints import FingerprintWriter


def write_planted_store(path, data: PlantedData, top_fraction: float = 0.0) -> Path:
    """Write planted fingerprints into a fingerprint store (continuous or binarised top fraction).

    Parameters
    ----------
    path : Path
    data : PlantedData
    top_fraction : float
        0 stores continuous values; otherwise each vector keeps its top fraction as ones.

    Returns
    -------
    Path of the finished store.
    """
    n_sub, n_ses, n_vert, n_seeds = data.x.shape
    space = VolumeSpace("grid", data.grid_shape, np.eye(4))
    writer = FingerprintWriter(Path(path), [f"{i + 1:02d}" for i in range(n_sub)],
                               [str(t + 1) for t in range(n_ses)], np.ones((n_sub, n_ses), bool),
                               np.arange(n_vert), np.arange(n_seeds), space, top_fraction, {"planted": True})
    for s in range(n_sub):
        for t in range(n_ses):
            if top_fraction > 0:
                writer.write(s, t, binarize_top_fraction(data.x[s, t], top_fraction))
            else:
                writer.write(s, t, data.x[s, t])
    return writer.finish()

