"""pavi-parcel: individual probabilistic parcellations with Plate-Amortized Variational Inference.

The Python API::

    from pavi_parcel import PaviParcellation, run_pipeline

:class:`PaviParcellation` (:mod:`pavi_parcel.inference.estimator`) fits the model to a fingerprint
store and applies it to new subjects; :func:`run_pipeline` (:mod:`pavi_parcel.workflows.api`) runs
the whole pipeline on a BIDS dataset, as ``pavi-parcel fit`` does. Both are imported on first use,
so that ``import pavi_parcel.<module>`` stays light (torch, nilearn and Hydra load only when needed).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["PaviParcellation", "__version__", "run_pipeline"]


def __getattr__(name: str) -> Any:
    if name == "PaviParcellation":
        from .inference.estimator import PaviParcellation

        return PaviParcellation
    if name == "run_pipeline":
        from .workflows.api import run_pipeline

        return run_pipeline
    raise AttributeError(f"module 'pavi_parcel' has no attribute {name!r}")
