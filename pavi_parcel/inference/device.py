"""Where a fit runs: the torch device (CUDA when present, else CPU) and the number of CPU threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from pavi_parcel.exceptions import BadInputError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda`` and ``cuda:N`` as given.

    Raises
    ------
    BadInputError
        CUDA asked for on a machine without it.
    """
    device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError("CUDA device requested", "a machine with a CUDA GPU and a CUDA build of torch",
                            "no CUDA device", "set device=auto or device=cpu")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(n_threads: int) -> Iterator[None]:
    """Run the block with ``n_threads`` CPU threads for torch (0 = leave torch's default), then restore."""
    previous = torch.get_num_threads()
    if n_threads > 0:
        torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


__all__ = ["resolve_device", "torch_threads"]
