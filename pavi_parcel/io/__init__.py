"""Files: atomic writes, HDF5 helpers, the layout of an OUT_DIR and the work-folder lock."""

from .atomic import atomic_write
from .files import write_json, write_text
from .locks import work_lock

__all__ = ["atomic_write", "work_lock", "write_json", "write_text"]
