"""Hydra sweeps (``--multirun``): several fits, one folder each, on one machine or a SLURM cluster.

Hydra's compose API has no launchers, so sweeps go through a ``@hydra.main`` entry point
(:func:`hydra_app`) whose task is :class:`SweepJob`. Every job of a sweep writes a
BIDS-derivatives dataset to its own folder ``OUT_DIR/sweep/<swept overrides>/`` (e.g.
``OUT_DIR/sweep/model.n_networks=7/``), shares the intermediate stores in ``OUT_DIR/work``
(the pipeline's file lock lets one job compute ingestion and fingerprints while the others
wait and reuse them) and calls the same :func:`pavi_parcel.workflows.pipeline.run` as a single fit.

Pre-emption and time limits (submitit on SLURM): SLURM sends ``USR2`` ``signal_delay_s``
seconds before the time limit. While the fit runs, the job hands that signal to the fit's
``SIGUSR1`` handler (:class:`pavi_parcel.inference.checkpoint.StopSignals`): the fit checkpoints and
raises :class:`~pavi_parcel.exceptions.InterruptedFit`, then submitit requeues the job (the
launcher's ``checkpoint`` resubmits it; at most ``max_num_timeout`` times for time limits)
and the job exits without a result. The requeued job reruns ``pipeline.run``, which skips
finished stages and resumes the fit from its checkpoint. Outside the fit, submitit requeues
at once: the other stages are cached and written atomically. A ``SIGTERM`` (SLURM
pre-emption with ``PreemptMode=REQUEUE``) also checkpoints the fit; SLURM requeues the job.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from pavi_parcel.exceptions import BadInputError, InterruptedFit
from pavi_parcel.io.atomic import atomic_write
from pavi_parcel.settings.compose import settings_from_config

from .pipeline import run
from .sweep_overrides import CONFIG_DIR, SHARED_KEYS, override_key, shared_settings, sweep_overrides, validate_overrides

log = logging.getLogger(__name__)

Task = Callable[[DictConfig], Any]
"""What a sweep job runs: ``pipeline.run(cfg) -> Path``, or anything with that signature."""


STATUS_FILE = ".hydra/sweep_job.json"
"""Per-job record (overrides, status, SLURM job id, host, times, error), next to Hydra's own
records of the job (``.hydra/config.yaml``, ``overrides.yaml``, the log ``pavi-parcel.log``)."""




class SweepJob:
    """One job of a sweep: point ``out_dir`` at the job's folder, share ``work_dir``, run.

    Parameters
    ----------
    task : callable, optional
        ``task(cfg) -> Path`` run by the job; default :func:`pavi_parcel.workflows.pipeline.run`.
        Must be importable (or picklable by value) where the job runs.
    """

    def __init__(self, task: Task | None = None):
        self.task = task

    def __call__(self, cfg: DictConfig) -> str:
        hydra_cfg = HydraConfig.get()
        out_dir = Path(cfg.out_dir).absolute()
        work_dir = Path(cfg.work_dir).absolute() if cfg.work_dir else out_dir / "work"
        if hydra_cfg.mode == RunMode.MULTIRUN:
            out_dir = Path(hydra_cfg.runtime.output_dir).absolute()
        with open_dict(cfg):
            cfg.out_dir, cfg.work_dir = str(out_dir), str(work_dir)
        record: dict[str, Any] = {
            "overrides": [o for o in hydra_cfg.overrides.task if override_key(o) not in SHARED_KEYS],
            "out_dir": str(out_dir),
            "work_dir": str(work_dir),
            "slurm_job_id": _slurm_job_id(),
            "host": socket.gethostname(),
            "started": time.time(),
        }
        log.info("sweep job %s -> %s", ",".join(record["overrides"]) or "(no overrides)", out_dir)
        with _PreemptionBridge() as bridge:
            try:
                result = (self.task or _pipeline_run)(cfg)
            except InterruptedFit as exc:
                _write_status(out_dir, record, "interrupted", str(exc))
                bridge.requeue_or_exit()
                raise
            except (SystemExit, KeyboardInterrupt):  # submitit requeued the job, or a user stopped it
                _write_status(out_dir, record, "stopped", None)
                raise
            except Exception as exc:
                _write_status(out_dir, record, "failed", "".join(traceback.format_exception(exc)))
                log.exception("sweep job failed")
                raise
        _write_status(out_dir, record, "done", None)
        return str(result)


def _pipeline_run(cfg: DictConfig) -> Any:
    """The default task: the job's composed config, checked by the schema, through the pipeline."""
    return run(settings_from_config(cfg))


def _slurm_job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _write_status(out_dir: Path, record: dict[str, Any], status: str, error: str | None) -> None:
    (out_dir / STATUS_FILE).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / STATUS_FILE) as tmp:
        done = {**record, "status": status, "error": error, "finished": time.time()}
        tmp.write_text(json.dumps(done, indent=2) + "\n")


class _PreemptionBridge:
    """Inside a submitit job, route submitit's signal (``USR2``) to a running fit's ``SIGUSR1`` handler.

    submitit's own handler requeues the job and exits at once. While a fit runs (a handler
    is installed for ``SIGUSR1``), the signal goes to the fit instead, which checkpoints and
    raises ``InterruptedFit``; :meth:`requeue_or_exit` then calls submitit's handler.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.submitit_handler: Any = None
        self.received = False
        if "SUBMITIT_FOLDER" not in os.environ:
            return
        from submitit import JobEnvironment

        signum = JobEnvironment._usr_sig()
        handler = signal.getsignal(signum)
        if callable(handler) and signum != signal.SIGUSR1:
            self.signum, self.submitit_handler = signum, handler

    def __enter__(self) -> _PreemptionBridge:
        if self.signum is not None:
            signal.signal(self.signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.signum is not None:
            signal.signal(self.signum, self.submitit_handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = True
        fit_handler = signal.getsignal(signal.SIGUSR1)
        if callable(fit_handler):
            log.warning("caught %s: asking the fit to checkpoint", signal.Signals(signum).name)
            fit_handler(signal.SIGUSR1, frame)
        else:
            self.submitit_handler(signum, frame)

    def requeue_or_exit(self) -> None:
        """After ``InterruptedFit`` in a submitit job: requeue if submitit signalled, then exit.

        ``SystemExit`` makes submitit write no result, so the submitting process keeps waiting
        for the requeued job. Outside submitit it returns and the caller re-raises.
        """
        if self.signum is None:
            return
        if self.received:
            self.submitit_handler(self.signum, None)  # checkpoints the launcher, requeues, exits
        log.warning("fit interrupted by SIGTERM/SIGUSR1 (pre-emption); exiting for SLURM to requeue")
        raise SystemExit(-1)


def hydra_app(task: Task | None = None, config_dir: str | Path | None = None) -> Callable[[], Any]:
    """The ``@hydra.main`` entry point of pavi-parcel, running ``SweepJob(task)``.

    Parameters
    ----------
    task : callable, optional
        What each job runs; default :func:`pavi_parcel.workflows.pipeline.run`.
    config_dir : str or Path, optional
        Config root holding ``config.yaml``; default :data:`CONFIG_DIR`.

    Returns
    -------
    callable
        Call it without arguments: it parses ``sys.argv`` as Hydra does (``--multirun KEY=VALUE ...``).
    """
    main = hydra.main(config_path=str(config_dir or CONFIG_DIR), config_name="config", version_base="1.3")
    return main(SweepJob(task))


@contextmanager
def _argv_and_env(argv: list[str], env: Mapping[str, str]) -> Iterator[None]:
    saved_argv, saved_env = sys.argv, {k: os.environ.get(k) for k in env}
    sys.argv = argv
    os.environ.update(env)
    try:
        yield
    finally:
        sys.argv = saved_argv
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


RESULT_WAIT_S = 300
"""Seconds a finished-looking SLURM job may take to show its result file (submitit's default: 15)."""


@contextmanager
def _patient_results(seconds: float = RESULT_WAIT_S) -> Iterator[None]:
    """Let submitit wait longer for a job's result file before calling the job failed.

    submitit deems a job done when its result file exists or when ``sacct`` reports a state
    outside its list of running states; a job still ``CONFIGURING`` on a node that has just
    started, or accounting that lags on a busy ``slurmdbd``, looks done while the job runs, and
    submitit then gives up after 15 s without a result. Waiting longer costs nothing to a job
    that finishes, and only delays the report of one that died.
    """
    try:
        from submitit.core.core import Job
    except ImportError:  # no submitit: no SLURM launcher either
        yield
        return
    saved = Job._results_timeout_s
    Job._results_timeout_s = max(saved, seconds)
    try:
        yield
    finally:
        Job._results_timeout_s = saved


def run_sweep(
    overrides: Sequence[str],
    base: Mapping[str, Any] | None = None,
    task: Task | None = None,
    config_dir: str | Path | None = None,
) -> int:
    """Run a Hydra sweep (``--multirun``) of the pipeline through the configured launcher.

    Parameters
    ----------
    overrides : sequence of str
        Hydra overrides, e.g. ``["model.n_networks=7,17", "hydra/launcher=slurm_gpu"]``;
        may hold ``bids_dir=``/``out_dir=``. Without a ``hydra/launcher`` choice, jobs run
        one after the other in this process (Hydra's basic launcher).
    base : mapping, optional
        Settings shared by every job (``bids_dir``, ``out_dir``, ``participant_label`` ...),
        see :func:`sweep_overrides`.
    task : callable, optional
        What each job runs; default :func:`pavi_parcel.workflows.pipeline.run`.
    config_dir : str or Path, optional
        Config root holding ``config.yaml``; default :data:`CONFIG_DIR`.

    Returns
    -------
    int
        0 when every job finished; 1 when a job failed (its ``sweep_job.json`` and log, or
        the submitit logs under ``OUT_DIR/sweep/.submitit/<job id>/``, say why).

    Raises
    ------
    BadInputError
        Bad overrides (checked before any job starts), or a job's own input error when jobs
        run in this machine's processes (``InterruptedFit`` likewise).
    """
    full = sweep_overrides(overrides, base)
    n_jobs = validate_overrides(full, config_dir)
    sweep_dir = _sweep_dir(overrides, base or {})
    log.info("sweep of %d job(s) into %s", n_jobs, sweep_dir)
    started, code = time.time(), 0
    with _argv_and_env(["pavi-parcel", "--multirun", *full], {"HYDRA_FULL_ERROR": "1"}), _patient_results():
        try:
            hydra_app(task, config_dir)()
        except (BadInputError, InterruptedFit):
            raise
        except Exception as exc:  # a job failed; submitit reports a remote error as its traceback text
            log.error("a sweep job failed:\n%s", exc)
            code = 1
    statuses = read_statuses(sweep_dir, since=started)
    for folder, status in sorted(statuses.items()):
        log.info("%-11s %-12s %s", status.get("status"), status.get("slurm_job_id") or "-", folder)
    n_done = sum(s.get("status") == "done" for s in statuses.values())
    if code == 0 and n_done < n_jobs:
        log.error("only %d of %d jobs reported done in %s", n_done, n_jobs, sweep_dir)
        code = 1
    return code


def _sweep_dir(overrides: Sequence[str], base: Mapping[str, Any]) -> Path:
    """``OUT_DIR/sweep``, or the folder given as ``hydra.sweep.dir=``."""
    for text in overrides:
        if text.startswith("hydra.sweep.dir="):
            value = OverridesParser.create().parse_override(text).value()
            return Path(str(value)).expanduser().absolute()
    return shared_settings(overrides, base)[0]["out_dir"] / "sweep"


def read_statuses(sweep_dir: Path, since: float = 0.0) -> dict[Path, dict[str, Any]]:
    """The ``sweep_job.json`` records under ``sweep_dir`` (``OUT_DIR/sweep``), by job folder.

    Parameters
    ----------
    sweep_dir : Path
        ``OUT_DIR/sweep``.
    since : float
        Only records of jobs that ended after this time (seconds since the epoch).
    """
    found: dict[Path, dict[str, Any]] = {}
    for path in Path(sweep_dir).rglob(Path(STATUS_FILE).name):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if record.get("finished", 0) >= since:
            found[path.parent.parent] = record
    return found
