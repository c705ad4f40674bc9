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


def temporal_snr(signals: np.ndarray, kept: np.ndarray, chunk: int = 8192) -> float:
    """Median temporal SNR (mean / standard deviation over the kept frames) of a run's points.

    Parameters
    ----------
    signals : ndarray of shape (n_frames, n_points)
        Raw intensities of the valid points (a transposed view is fine).
    kept : ndarray of int
        Frames kept after non-steady-state removal and scrubbing.
    chunk : int
        Points per block, so that a 327k-vertex run is never copied whole.

    Returns
    -------
    float
        The median over points of ``mean / std``; NaN when the run holds no raw intensities
        (fewer than 90 % of its varying points have a positive mean, as in demeaned or z-scored
        outputs such as XCP-D's), where temporal SNR means nothing.
    """
    ratios, positive = [], 0
    for start in range(0, signals.shape[1], chunk):
        block = np.asarray(signals[:, start:start + chunk][kept], dtype=np.float64)
        mean, std = block.mean(axis=0), block.std(axis=0)
        varies = std > 0  # constant points (medial wall, empty voxels) have no SNR
        positive += int((mean[varies] > 0).sum())
        ratios.append(mean[varies] / std[varies])
    values = np.concatenate(ratios) if ratios else np.empty(0)
    if values.size == 0 or positive < 0.9 * values.size:
        return float("nan")
    return float(np.median(values))


__all__ = ["clean_signals", "temporal_snr"]
