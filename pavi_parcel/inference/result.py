"""A finished fit in memory, and how it is saved: ``posterior.h5`` and ``model_state.pt``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.stores.posterior import Posterior, write_posterior


@dataclass
class FitResult:
    """A finished fit, in memory.

    Attributes
    ----------
    posterior : Posterior
        Label probabilities of every subject, the group atlas and profiles (``posterior.h5``).
    model_state : dict
        What :func:`pavi_parcel.model.new_subjects.infer_subjects` needs for new subjects
        (``model_state.pt``).
    elbo : list of dict
        The ELBO log (``elbo.tsv``): step, seconds, elbo and the per-term values.
    """

    posterior: Posterior
    model_state: dict[str, Any]
    elbo: list[dict[str, float]] = field(default_factory=list)

    def save(self, model_dir: Path) -> Path:
        """Write ``posterior.h5`` and ``model_state.pt`` (atomically) to ``model_dir``; return the posterior's path."""
        path = Path(model_dir) / "posterior.h5"
        write_posterior(path, self.posterior)
        with atomic_write(Path(model_dir) / "model_state.pt") as tmp:
            torch.save(self.model_state, tmp)
        return path


__all__ = ["FitResult"]
