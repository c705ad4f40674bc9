"""Cleaning of a run's (frames x points) array with nilearn's ``signal.clean``, for spaces without a masker.

Surface runs (GIFTI, CIFTI) arrive as arrays: masking is a column selection, and cleaning is the
same ``nilearn.signal.clean`` call nilearn's ``SurfaceMasker`` makes (detrending, confound
regression, the cosine or Butterworth filter and z-scoring at once). Calling it directly needs no
mesh, so runs on a mesh that is not at hand (fsaverage6 offline, fsLR) are cleaned the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def clean_signals(signals: np.ndarray, regressors: Any, sample_mask: np.ndarray | None,
                  cleaning: Mapping[str, Any]) -> np.ndarray:
    """Clean the time series of the valid points of a run.

    Parameters
    ----------
    signals : ndarray of shape (n_frames, n_points)
        All frames of the run, valid points only.
    regressors : DataFrame of shape (n_frames, n_regressors) or None
    sample_mask : ndarray of int or None
        Frames kept (None = every frame).
    cleaning : mapping
        The maskers' keyword arguments (:func:`pavi_parcel.ingest.confounds.masker_kwargs`):
        ``detrend``, ``standardize``, ``high_pass``, ``low_pass``, ``t_r``, ``clean_args``.

    Returns
    -------
    ndarray of float32, shape (n_frames_kept, n_points)
    """
    from nilearn.signal import clean

    options = dict(cleaning)
    extra = options.pop("clean_args", None) or {}
    # float64 in, as the maskers hand it to signal.clean, so the result is the maskers' to the bit
    out = clean(np.asarray(signals, dtype=np.float64), confounds=regressors, sample_mask=sample_mask,
                standardize_confounds=True, **options, **extra)
    return np.asarray(out, dtype=np.float32)


__all__ = ["clean_signals"]
