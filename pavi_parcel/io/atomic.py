"""Crash-safe file writing: write to a temporary name in the same folder, then rename.

A reader never sees a truncated file: either the old file, no file, or the complete new
one. ``os.replace`` is atomic on POSIX when source and target share a file system, which
is why the temporary file lives next to its target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from pavi_parcel.exceptions import PaviParcelError, ResourceError

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
    except OSError as exc:  # a parent that is a file, a read-only file system
        raise as_resource_error(exc, path) from exc
    tmp = temporary_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as exc:  # h5py, nibabel and torch report write failures in their own ways
        tmp.unlink(missing_ok=True)
        mapped = as_resource_error(exc, path)
        if mapped is exc:
            raise
        raise mapped from exc
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


_ERRNO_IN_TEXT = re.compile(r"errno\s*=\s*(\d+)|\[Errno (\d+)\]")
_WRITE_FAILURE = re.compile(r"write|iostream|inline_container|unexpected pos", re.IGNORECASE)  # torch's writer
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_NO_WRITE = (errno.EACCES, errno.EPERM, errno.EROFS)


def error_number(exc: BaseException) -> int | None:
    """The OS error number behind an exception: ``errno`` or one quoted in the message (h5py)."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    match = _ERRNO_IN_TEXT.search(str(exc))
    return int(match.group(1) or match.group(2)) if match else None


def as_resource_error(exc: BaseException, path: Path) -> BaseException:
    """Turn a failed write into a one-line :class:`ResourceError`; other errors come back unchanged.

    Recognises disk full and quota, file-size limits, permission and read-only file systems,
    a parent that is a file, whether the error number is an attribute (Python, nibabel) or part
    of the message (h5py); a write failure without a number (torch) is checked against the free
    space of the target's disk.
    """
    if isinstance(exc, PaviParcelError):
        return exc
    path = Path(path)
    number = error_number(exc)
    if number is None and isinstance(exc, RuntimeError) and _WRITE_FAILURE.search(str(exc)):
        number = errno.ENOSPC if _free_bytes(path.parent) < 2**20 else errno.EFBIG if _size_limited() else None
    if number in _DISK_FULL:
        return ResourceError(f"Disk full while writing {path}", "free disk space",
                             "no space left on device", "free space or choose another OUT_DIR")
    if number == errno.EFBIG:
        return ResourceError(f"File size limit reached while writing {path}", "no limit on file size",
                             "file too large (ulimit -f)", "raise the limit (ulimit -f unlimited) or ask "
                             "the cluster admins")
    if number in _NO_WRITE:
        return _permission_error(path.parent)
    if number == errno.ENOTDIR:
        return ResourceError(f"Cannot create {path.parent}", "a path whose parents are folders",
                             "a regular file in the way", "choose another OUT_DIR")
    return exc


def _size_limited() -> bool:
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return soft != resource.RLIM_INFINITY
    except (ImportError, ValueError, OSError):
        return False


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 2**62
