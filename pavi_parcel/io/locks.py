"""A file lock on a work folder, shared by the jobs of a sweep."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from pavi_parcel.exceptions import BadInputError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def work_lock(work_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``work_dir`` (blocks while another job holds it)."""
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        handle = open(work_dir / ".lock", "a+")
    except PermissionError as exc:
        raise BadInputError(f"Cannot write to {work_dir}", "a writable output folder",
                            "permission denied", "choose another OUT_DIR or fix its permissions") from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

