"""The explicit state of a training loop (as NumPyro's ``SVIState``): progress and convergence.

A :class:`TrainState` is all a resumed fit needs, with the guide's and the optimiser's
state dicts, to continue exactly where it stopped; it is saved in every checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TrainState:
    """Progress of a fit.

    Attributes
    ----------
    step : int
        Optimisation steps taken.
    seconds : float
        Wall time of the training loop so far (resumed fits add to it).
    epochs : int
        Finished epochs (every (subject batch, patch) pair once).
    epoch_sum, epoch_n : float, int
        Sum and count of the minibatch ELBOs of the running epoch.
    prev_epoch : float or None
        Mean minibatch ELBO of the last finished epoch.
    elbo : float
        The last minibatch ELBO.
    converged, finished : bool
        The epoch-mean ELBO changed by less than ``tol`` (relative); the loop is done.
    """

    step: int = 0
    seconds: float = 0.0
    epochs: int = 0
    epoch_sum: float = 0.0
    epoch_n: int = 0
    prev_epoch: float | None = None
    elbo: float = math.nan
    converged: bool = False
    finished: bool = False

    def record(self, elbo: float, seconds: float) -> None:
        """One step done: its minibatch ELBO and the loop's wall time."""
        self.step += 1
        self.seconds = seconds
        self.elbo = elbo
        self.epoch_sum += elbo
        self.epoch_n += 1

    def close_epoch(self, steps_per_epoch: int, tol: float, min_epochs: int) -> bool:
        """Convergence bookkeeping; True when this step ended an epoch.

        The fit has converged once, after at least ``min_epochs`` epochs, the epoch-mean ELBO
        moved by at most ``tol * |ELBO|`` from the previous epoch's.
        """
        if self.epoch_n < steps_per_epoch:
            return False
        mean = self.epoch_sum / self.epoch_n
        self.epochs += 1
        if self.prev_epoch is not None and self.epochs >= min_epochs and abs(mean - self.prev_epoch) <= tol * abs(mean):
            self.converged = True
        self.prev_epoch, self.epoch_sum, self.epoch_n = mean, 0.0, 0
        return True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})


__all__ = ["TrainState"]
