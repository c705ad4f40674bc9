"""Memory and disk estimates, made before the long stages start, and batch sizes that fit.

Two checks, both called by :func:`pavi_parcel.workflows.pipeline.run`:

- :func:`disk_problems` in the validation pass, from the run headers and the config, before
  anything is written: the time-series store, the fingerprint store, the posterior, the
  checkpoint and the maps must fit on the disks of ``work_dir`` and ``OUT_DIR``.
- :func:`plan_fit` before the fit stage, from the fingerprint store: the fit's working set
  (minibatch of unpacked fingerprints and its autograd intermediates, the cache of packed
  rows, per-subject parameters, the posterior array) must fit in the memory of the device.
  When it does not, the cache budget, then ``batch_vertices``, then ``batch_subjects`` are
  lowered (logged, since other batch sizes give other, equally valid, results); when even the
  smallest batches do not fit, a :class:`~pavi_parcel.exceptions.ResourceError` says how
  much memory the run needs.

All sizes are in bytes. The estimates are upper bounds within a small factor, not promises.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pavi_parcel.exceptions import BadInputError, ResourceError
from pavi_parcel.settings.schema import FitSettings, ModelSettings
from pavi_parcel.stores.fingerprints import FingerprintStore

log = logging.getLogger(__name__)

GB = 2.0**30
HEADROOM = 0.8             # use at most this fraction of the free memory or disk
AUTOGRAD_FACTOR = 4.0      # float32 copies of a minibatch alive at once (unpacked, demeaned, products, grads)
MIN_BATCH_VERTICES = 256


# --------------------------------------------------------------------------- system
def available_memory() -> int:
    """Memory this process may still use: MemAvailable, capped by a cgroup limit when one is set."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit != "max" and int(limit) < 2**60:
                available = min(available, int(limit) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return max(0, int(available))


def free_disk(path: Path) -> int:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        return int(shutil.disk_usage(path).free)
    except OSError:
        return 2**62


def _size_of(paths: list[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------- disk
@dataclass(frozen=True)
class CohortShape:
    """What the size of every store follows from.

    Attributes
    ----------
    frames : list of int
        Frames of every run.
    n_points : int
        Vertices (voxels) modelled, at most.
    n_subjects, n_sessions : int
    n_seeds : int
        Fingerprint length D.
    n_networks : int
        K.
    n_total : int
        Size of the full space the maps are written on.
    method : str
        ``fit.method``; ``svi`` keeps free parameters per subject and vertex.
    """

    frames: list[int]
    n_points: int
    n_subjects: int
    n_sessions: int
    n_seeds: int
    n_networks: int
    n_total: int
    method: str = "pavi_e"


def estimate_disk(shape: CohortShape) -> dict[str, int]:
    """Bytes each output takes.

    Returns
    -------
    dict
        ``timeseries`` and ``fingerprints`` (under ``work_dir``), ``posterior``, ``checkpoint``
        and ``maps`` (under ``OUT_DIR``).
    """
    s, t, n, k, d = shape.n_subjects, shape.n_sessions, shape.n_points, shape.n_networks, shape.n_seeds
    per_subject_params = k * d * 4 * (t + 1)
    checkpoint = 3 * (s * per_subject_params + (s * n * k * 4 if shape.method == "svi" else 0)) + 8 * 2**20
    maps_per_set = shape.n_total * (k + 2) * 4
    return {
        "timeseries": int(sum(shape.frames) * n * 4),
        "fingerprints": int(s * t * n * ((d + 7) // 8)),
        "posterior": int(s * n * k * 4 + n * k * 4 + k * d * 4),
        "checkpoint": int(checkpoint),
        "maps": int((s + 1) * maps_per_set),
    }


def disk_problems(needs: dict[str, int], work_dir: Path, out_dir: Path,
                  free: Mapping[Path, int] | None = None) -> list[ResourceError]:
    """Compare the estimate with the free space of the work and output disks.

    Parameters
    ----------
    needs : dict
        From :func:`estimate_disk`.
    work_dir, out_dir : Path
    free : mapping of Path to int, optional
        Free bytes per folder; measured when absent.

    Returns
    -------
    list of ResourceError
        Empty when everything fits (with :data:`HEADROOM`).
    """
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    work_files = [*work_dir.glob("timeseries/*.h5"), work_dir / "fingerprints.h5",
                  work_dir / "fingerprints.h5.partial"]
    out_files = [out_dir / "model" / "posterior.h5", out_dir / "model" / "checkpoint.pt"]
    places = {work_dir: ("timeseries", "fingerprints"), out_dir: ("posterior", "checkpoint", "maps")}
    need_by_disk: dict[Any, tuple[Path, int, list[str]]] = {}
    for folder, items in places.items():
        existing = _size_of(work_files if folder == work_dir else out_files)  # rewritten in place on resume
        total = max(0, sum(needs[i] for i in items) - existing)
        key = _device_of(folder)
        prev = need_by_disk.get(key, (folder, 0, []))
        need_by_disk[key] = (prev[0], prev[1] + total, prev[2] + [f"{i} {needs[i] / GB:.2f} GB" for i in items])
    problems = []
    for folder, total, parts in need_by_disk.values():
        available = free_disk(folder) if free is None or folder not in free else int(free[folder])
        if total > HEADROOM * available:
            problems.append(ResourceError(
                f"Not enough disk space for {folder}", f"about {total / GB:.2f} GB free ({', '.join(parts)})",
                f"{available / GB:.2f} GB free", "free some space, choose an OUT_DIR on a larger disk, "
                "or put the intermediate stores elsewhere with work_dir=PATH"))
    return problems


def _device_of(folder: Path) -> Any:
    path = Path(folder).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        return os.stat(path).st_dev
    except OSError:
        return str(path)


# --------------------------------------------------------------------------- memory
@dataclass(frozen=True)
class FitMemory:
    """Memory the fit needs, by part, for given batch sizes (bytes)."""

    batch: int
    cache: int
    parameters: int
    posterior: int

    @property
    def total(self) -> int:
        return self.batch + self.cache + self.parameters + self.posterior


def fit_memory(n_subjects: int, n_sessions: int, n_vertices: int, n_seeds: int, n_networks: int,
               batch_subjects: int, batch_vertices: int, cache_gb: float, method: str,
               binary: bool = True) -> FitMemory:
    """Working memory of the fit stage.

    Parameters
    ----------
    n_subjects, n_sessions, n_vertices, n_seeds, n_networks : int
        Plate sizes S, T, N, D and K.
    batch_subjects, batch_vertices : int
        Minibatch size (subjects) and patch length (vertices).
    cache_gb : float
        ``fit.memory_budget_gb``: cache of packed store rows.
    method : str
        ``svi`` keeps free logits per (subject, vertex) and their Adam moments.
    binary : bool
        Bit-packed store (True) or float16 values.
    """
    b = min(batch_subjects, n_subjects)
    v = min(batch_vertices, n_vertices)
    batch = int(AUTOGRAD_FACTOR * b * n_sessions * v * n_seeds * 4 + 4 * b * n_sessions * v * n_networks * 4)
    packed = n_sessions * n_vertices * ((n_seeds + 7) // 8 if binary else 2 * n_seeds)
    cache = int(min(n_subjects * packed, max(0.0, cache_gb) * GB // max(packed, 1) * packed))
    params = 4 * n_subjects * n_networks * n_seeds * 4 * (n_sessions + 1)   # values, grads, Adam moments
    if method == "svi":
        params += 4 * n_subjects * n_vertices * n_networks * 4
    posterior = n_subjects * n_vertices * n_networks * 4
    return FitMemory(batch, cache, params, posterior)


@dataclass(frozen=True)
class BatchPlan:
    """Batch sizes chosen for the fit and the memory they need."""

    batch_subjects: int
    batch_vertices: int
    memory_budget_gb: float
    memory: FitMemory
    available: int
    changed: bool


def choose_batches(n_subjects: int, n_sessions: int, n_vertices: int, n_seeds: int, n_networks: int,
                   fit: FitSettings, available: int, binary: bool = True) -> BatchPlan:
    """The requested batch sizes if they fit in ``available`` bytes, else the largest smaller ones.

    Lowers the cache budget first (it changes speed, not results), then ``batch_vertices``
    (halving, down to 256), then ``batch_subjects`` (halving, down to 1).

    Raises
    ------
    ResourceError
        When the smallest batches do not fit either.
    """
    method = fit.method
    bs, bv = fit.batch_subjects, fit.batch_vertices
    cache_gb = fit.memory_budget_gb
    limit = HEADROOM * available

    def need(bs_: int, bv_: int, cache_: float) -> FitMemory:
        return fit_memory(n_subjects, n_sessions, n_vertices, n_seeds, n_networks, bs_, bv_, cache_, method, binary)

    current = need(bs, bv, cache_gb)
    if current.total > limit:
        spare = limit - (current.total - current.cache)
        cache_gb = max(0.0, spare / GB) if spare > 0 else 0.0
        current = need(bs, bv, cache_gb)
    while current.total > limit and bv > MIN_BATCH_VERTICES:
        bv = max(MIN_BATCH_VERTICES, bv // 2)
        current = need(bs, bv, cache_gb)
    while current.total > limit and bs > 1:
        bs = max(1, bs // 2)
        current = need(bs, bv, cache_gb)
    if current.total > limit:
        raise ResourceError(
            f"Not enough memory to fit {n_subjects} subjects x {n_vertices} vertices x K={n_networks}",
            f"about {current.total / GB:.2f} GB even with fit.batch_subjects=1 and fit.batch_vertices={bv} "
            f"(posterior {current.posterior / GB:.2f} GB, parameters {current.parameters / GB:.2f} GB, "
            f"minibatch {current.batch / GB:.2f} GB)", f"{available / GB:.2f} GB available",
            "use a machine (or GPU) with more memory, or fit fewer participants per run (participant_label)")
    changed = (bs, bv) != (fit.batch_subjects, fit.batch_vertices) or cache_gb != fit.memory_budget_gb
    return BatchPlan(bs, bv, cache_gb, current, int(available), changed)


def device_memory(device: str) -> int:
    """Free memory of the fit device: the GPU's free memory for CUDA, else the host's."""
    if device.startswith("cuda") or device == "auto":
        try:
            import torch

            if torch.cuda.is_available():
                index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
                return int(torch.cuda.mem_get_info(index)[0])
        except (ImportError, RuntimeError, ValueError):
            pass
    return available_memory()


def plan_fit(store_path: Path, model: ModelSettings, fit: FitSettings, device: str = "auto",
             available: int | None = None) -> FitSettings:
    """Check K against the store and choose batch sizes that fit; return the fit settings to use.

    Parameters
    ----------
    store_path : Path
        The fingerprint store the fit reads.
    model, fit : ModelSettings, FitSettings
    device : str
    available : int, optional
        Bytes of memory to plan for; measured on the device when absent.

    Returns
    -------
    FitSettings
        ``fit``, with ``batch_subjects``, ``batch_vertices`` and ``memory_budget_gb`` lowered
        when needed.

    Raises
    ------
    BadInputError
        K larger than the number of vertices in the store.
    ResourceError
        Not enough memory even for the smallest batches.
    """
    k = model.n_networks
    with FingerprintStore(store_path) as store:
        s, t, n, d, binary = store.n_subjects, store.n_sessions, store.n_vertices, store.n_seeds, store.binary
    if k > n:
        raise BadInputError(f"model.n_networks={k} is larger than the {n} vertices shared by every run",
                            f"K <= {n}", str(k), f"set model.n_networks to at most {n} (or include more coverage)")
    if fit.method == "vbem":
        needed = fit_memory(s, t, n, d, k, 1, n, 0.0, "vbem", binary)
        limit = available_memory() if available is None else available
        if needed.total > HEADROOM * limit:
            raise ResourceError(f"Not enough memory for VB-EM on {s} subjects x {n} vertices",
                                f"about {needed.total / GB:.2f} GB", f"{limit / GB:.2f} GB available",
                                "use a machine with more memory or fit.method=pavi_e")
        return fit
    limit = device_memory(device) if available is None else available
    plan = choose_batches(s, t, n, d, k, fit, limit, binary)
    if plan.changed:
        log.warning("Lowered fit batch sizes to fit in %.2f GB: batch_subjects=%d, batch_vertices=%d, "
                    "memory_budget_gb=%.2f (results differ from runs with other batch sizes)",
                    limit / GB, plan.batch_subjects, plan.batch_vertices, plan.memory_budget_gb)
    return fit.replace(batch_subjects=plan.batch_subjects, batch_vertices=plan.batch_vertices,
                       memory_budget_gb=plan.memory_budget_gb)


__all__ = ["BatchPlan", "CohortShape", "FitMemory", "available_memory", "choose_batches", "device_memory",
           "disk_problems", "estimate_disk", "fit_memory", "free_disk", "plan_fit"]
