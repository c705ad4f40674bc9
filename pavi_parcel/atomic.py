"""Crash-safe file writing: write to a temporary name in the same folder, then rename.

A reader never sees a truncated file: either the old file, no file, or the complete new
one. ``os.replace`` is atomic on POSIX when source and target share a file system, which
is why the temporary file lives next to its target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import Iterator

from .exceptions import ResourceError

TMP_MARK = ".tmp-"


def temporary_sibling(path: Path) -> Path:
    """Return an unused temporary path next to ``path`` that keeps its suffixes.

    Keeping the suffixes (``.func.gii``, ``.nii.gz``) lets writers that infer the format
    from the name (nibabel) work on the temporary file.
    """
    path = Path(path)
    return path.with_name(f"{TMP_MARK}{uuid.uuid4().hex[:8]}-{path.name}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` when the block succeeds.

    On any exception the temporary file is removed and ``path`` is left untouched.
    Disk-full and permission errors become a one-line :class:`ResourceError`.

    Examples
    --------
    >>> with atomic_write(out / "map.func.gii") as tmp:   # doctest: +SKIP
    ...     nib.save(img, tmp)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise _permission_error(path.parent) from exc
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _as_resource_error(exc, path) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(folder: str | os.PathLike) -> int:
    """Delete temporary files left under ``folder`` by a killed process; return how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for stale in folder.rglob(f"{TMP_MARK}*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def _permission_error(folder: Path) -> ResourceError:
    return ResourceError(
        f"Cannot write to {folder}", "a folder you can write to", "permission denied",
        "choose another OUT_DIR or fix its permissions (chmod u+w)")


def _as_resource_error(exc: OSError, path: Path) -> BaseException:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceError(f"Disk full while writing {path}", "free disk space",
                             "no space left on device", "free space or choose another OUT_DIR")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return _permission_error(path.parent)
    return exc
