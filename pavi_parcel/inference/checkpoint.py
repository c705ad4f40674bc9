"""Fit checkpoints: atomic save/load, and SIGTERM/SIGUSR1 handling during a fit.

A checkpoint holds everything that makes a resumed fit continue exactly where it stopped:
the guide's parameters and closed-form state, the optimiser's state, the minibatch random
generator's state, the step counter, elapsed time and the convergence monitor. Checkpoints are
written with :func:`pavi_parcel.io.atomic.atomic_write`, so a kill during a save leaves the
previous checkpoint intact.

Cluster schedulers (SLURM) send SIGTERM, or SIGUSR1 with ``--signal``, some time before killing
a job; :class:`StopSignals` turns either into a flag the training loop checks after every step,
so the loop checkpoints and raises :class:`~pavi_parcel.exceptions.InterruptedFit`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import torch

from pavi_parcel.io.atomic import atomic_write

log = logging.getLogger(__name__)
CHECKPOINT_NAME = "checkpoint.pt"
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


def settings_key(*parts: Any) -> str:
    """Stable hash of the settings a checkpoint belongs to (JSON of the parts, sorted keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` with ``torch.save`` atomically (temporary file, then rename)."""
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, key: str) -> dict[str, Any] | None:
    """Load a checkpoint if it exists, is readable and was made with the same settings ``key``.

    Returns None otherwise (the fit then starts afresh and says why in the log).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: start again
        log.warning("Ignoring unreadable checkpoint %s (%s)", path, exc.__class__.__name__)
        return None
    if state.get("key") != key:
        log.warning("Ignoring checkpoint %s: it was made with other settings or data", path)
        return None
    return state


class StopSignals:
    """Context manager: while active, SIGTERM and SIGUSR1 set :attr:`received` instead of killing.

    Previous handlers are restored on exit. Outside the main thread (where Python cannot install
    handlers) it does nothing.

    Examples
    --------
    >>> with StopSignals() as stop:          # doctest: +SKIP
    ...     for step in ...:
    ...         train_one_step()
    ...         if stop.received:
    ...             save_checkpoint(...); raise InterruptedFit(...)
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""
