"""Sweeps on a real one-node SLURM cluster (scripts/slurm_cluster.sh), through sbatch and submitit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bids_validator import EXPECTED_WARNINGS, assert_bids_valid
from tests.workflows.test_sweep import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"
pytestmark = pytest.mark.slow

# Job resources sized for the 2-core test node: both jobs of a 2-value sweep run at once.
SMALL_JOBS = ["hydra.launcher.cpus_per_task=1"]

STAND_IN = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from pavi_parcel.inference.checkpoint import StopSignals
    from pavi_parcel.exceptions import InterruptedFit
    from pavi_parcel.workflows.sweep import run_sweep

    def preemptible(cfg):
        # A fit that checkpoints on SIGTERM/SIGUSR1 (pavi_parcel.inference.checkpoint) and resumes.
        out = Path(cfg.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ckpt = out / "checkpoint.txt"
        with open(out / "starts.txt", "a") as f:
            f.write(os.environ.get("SLURM_RESTART_COUNT", "0") + "\\n")
        (out / "gpus.txt").write_text(os.environ.get("SLURM_GPUS_ON_NODE", "none"))
        if ckpt.exists():
            (out / "done.txt").write_text(ckpt.read_text())
            return out
        with StopSignals() as stop:
            (out / "fitting").touch()
            for step in range(1200):
                time.sleep(0.1)
                if stop.received:
                    ckpt.write_text(f"{stop.name} {step}")
                    raise InterruptedFit(f"interrupted by {stop.name} at step {step}")
        raise RuntimeError("no pre-emption signal arrived")

    if __name__ == "__main__":
        task = {"preemptible": preemptible}[sys.argv[1]]
        base = {"bids_dir": sys.argv[2], "out_dir": sys.argv[3]}
        sys.exit(run_sweep(sys.argv[5:], base, task=task, config_dir=sys.argv[4]))
    """
)



def _cluster(command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster() -> Iterator[bool]:
    """A running cluster; started here (and stopped afterwards) when it was not up. Yields accounting."""
    if os.geteuid() != 0:
        pytest.skip("the test cluster needs root (apt-get, munge, slurmd as root)")
    started = False
    if _cluster("status").returncode != 0:
        run = _cluster("start")
        if run.returncode != 0:
            if "could not be installed" in run.stderr:
                pytest.skip("SLURM packages cannot be installed here: " + run.stderr.strip().splitlines()[-1])
            pytest.fail("scripts/slurm_cluster.sh start failed:\n" + run.stderr)
        started = True
    accounting = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True).returncode == 0
    yield accounting
    if started:
        _cluster("stop")


@pytest.fixture
def sweep_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "config.yaml").write_text(TINY_CONFIG)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text("n_networks: 2\n")
    (tmp_path / "conf" / "hydra").symlink_to(ROOT / "pavi_parcel" / "conf" / "hydra")
    (tmp_path / "sweep_script.py").write_text(STAND_IN)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _sweep(tmp_path: Path, env: dict[str, str], task: str, overrides: list[str]) -> subprocess.Popen:
    command = [sys.executable, str(tmp_path / "sweep_script.py"), task, str(tmp_path / "bids"),
               str(tmp_path / "out"), str(tmp_path / "conf"), *overrides]
    log = open(tmp_path / "sweep.log", "w")
    return subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, tmp_path: Path, timeout: float) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        subprocess.run(["scancel", "--name=pavi-parcel"], check=False)
        pytest.fail("sweep did not finish in time:\n" + (tmp_path / "sweep.log").read_text()[-4000:])
    log = (tmp_path / "sweep.log").read_text()
    assert proc.returncode == 0, log[-4000:]
    return log


def _submitit_logs(sweep: Path, job_id: str) -> str:
    """stdout + stderr of one job, as submitit keeps them: .submitit/<job id>/<job id>_0_log.{out,err}."""
    folder = sweep / ".submitit" / job_id
    return "".join((folder / f"{job_id}_0_log.{ext}").read_text() for ext in ("out", "err"))


def _final_states(job_ids: list[str], timeout: float = 60) -> set[str]:
    """SLURM accounting states of jobs, once none is still running (a job's result file comes
    a moment before SLURM records its end)."""
    array = job_ids[0].split("_")[0]
    deadline = time.monotonic() + timeout
    while True:
        acct = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", array],
                              capture_output=True, text=True, check=True).stdout
        states = dict(line.split("|") for line in acct.split())
        found = {states.get(j, "MISSING") for j in job_ids}
        if not found & {"PENDING", "RUNNING", "COMPLETING", "MISSING"} or time.monotonic() > deadline:
            return found
        time.sleep(1)


def _job_state(job_id: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    match = re.search(r"JobState=(\w+)", out)
    return match.group(1) if match else ""


def _cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """``pavi-parcel ARGS`` (the console script's module), output captured."""
    return subprocess.run([sys.executable, "-m", "pavi_parcel.cli", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_fit_multirun_on_slurm_gives_one_dataset_per_job(
    cluster: bool, tmp_path: Path, sweep_env: dict[str, str]
) -> None:
    t0 = time.monotonic()
    sim = _cli(["simulate", "sim", "--n-subjects", "2", "--n-sessions", "1", "--n-frames", "60",
                "--n-networks", "3", "--seed", "0"], sweep_env, tmp_path, timeout=120)
    assert sim.returncode == 0, sim.stderr[-3000:]
    out = tmp_path / "out"
    args = ["fit", "sim/bids", "out", "--multirun", "model.n_networks=3,4",
            "ingest.min_frames=20", "fit.max_steps=3", "n_jobs=1", "export.report=false",
            "hydra/launcher=slurm", "hydra.launcher.mem_gb=4", "hydra.launcher.timeout_min=10", *SMALL_JOBS]
    try:
        fit = _cli(args, sweep_env, tmp_path, timeout=240)
    except subprocess.TimeoutExpired:
        subprocess.run(["scancel", "--name=pavi-parcel"], check=False)
        raise
    log = fit.stdout + fit.stderr
    assert fit.returncode == 0, log[-4000:]
    assert "Submitit 'slurm' sweep output dir" in log

    sweep = out / "sweep"
    folders = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert folders == ["model.n_networks=3", "model.n_networks=4"]  # named by the swept key only
    import nibabel as nib
    import yaml

    job_ids, computed_fingerprints = [], 0
    for k in (3, 4):
        folder = sweep / f"model.n_networks={k}"
        saved = yaml.safe_load((folder / "model" / "config.yaml").read_text())
        assert saved["model"]["n_networks"] == k and saved["fit"]["max_steps"] == 3
        assert saved["out_dir"] == str(folder) and saved["work_dir"] == str(out / "work")
        assert (folder / "dataset_description.json").exists()
        group = nib.load(folder / "group" / f"hemi-L_space-fsaverage5_seg-pavi{k}_probseg.func.gii")
        assert len(group.darrays) == k  # one map per network
        for sub in ("01", "02"):
            maps = folder / f"sub-{sub}" / "anat"
            assert (maps / f"sub-{sub}_hemi-R_space-fsaverage5_seg-pavi{k}_dseg.label.gii").exists()
            assert (maps / f"sub-{sub}_hemi-L_space-fsaverage5_seg-pavi{k}_probseg.func.gii").exists()
        assert not (folder / "work").exists()  # intermediate stores are shared, not per job
        warnings = assert_bids_valid(folder)   # every sweep job's folder is a valid BIDS derivative
        assert {w["code"] for w in warnings} <= EXPECTED_WARNINGS, warnings
        status = json.loads((folder / ".hydra" / "sweep_job.json").read_text())
        assert status["status"] == "done"
        job_id = status["slurm_job_id"]
        assert re.fullmatch(r"\d+_\d", job_id), job_id
        job_ids.append(job_id)
        # submitit's per-job logs, named by the SLURM job id, say the job ran and completed
        logs = _submitit_logs(sweep, job_id)
        assert f"JobEnvironment(job_id={job_id}" in logs and "Job completed successfully" in logs
        assert f" {job_id} " in log  # the sweep's summary names each job
        computed_fingerprints += bool(re.search(r"fingerprints: +100%", logs))
    assert (out / "work" / "fingerprints.h5").exists()
    assert computed_fingerprints == 1  # the first job computed them; the other waited on the lock and reused them
    if cluster:  # with accounting, SLURM itself records both jobs as completed
        assert _final_states(job_ids) == {"COMPLETED"}
    assert time.monotonic() - t0 < 300


def test_preempted_job_checkpoints_requeues_and_resumes(
    cluster: bool, tmp_path: Path, sweep_env: dict[str, str]
) -> None:
    # On the test cluster's `gpu` partition (one GPU token, no device) when it has one: the
    # slurm_gpu preset's sbatch options (--partition=gpu --gpus-per-node=1) must be accepted.
    gpu = bool(subprocess.run(["sinfo", "-h", "-p", "gpu"], capture_output=True, text=True).stdout.strip())
    launcher = ["hydra/launcher=slurm_gpu" if gpu else "hydra/launcher=slurm", "hydra.launcher.mem_gb=1",
                "hydra.launcher.timeout_min=5", *SMALL_JOBS]
    proc = _sweep(tmp_path, sweep_env, "preemptible", ["model.n_networks=3", *launcher])
    folder = tmp_path / "out" / "sweep" / "model.n_networks=3"
    deadline = time.monotonic() + 90
    while not (folder / "fitting").exists():
        assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sweep.log").read_text()
        time.sleep(0.2)
    submitted = (tmp_path / "out" / "sweep" / ".submitit").glob("*/*_submitted.pkl")
    job_id = next(submitted).parent.name  # a one-job sweep is a plain job, not an array
    # what SLURM sends signal_delay_s before the time limit or on pre-emption (submitit's USR2)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    # SLURM holds a requeued job for 2 minutes (BeginTime); an admin may release it sooner. Not
    # within the same second as the requeue: slurmd refuses a credential as old as the revoked one.
    deadline = time.monotonic() + 60
    while _job_state(job_id) != "PENDING":
        assert time.monotonic() < deadline, f"job {job_id} was not requeued: {_job_state(job_id)}"
        time.sleep(0.2)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now+3"], check=True)
    _finish(proc, tmp_path, timeout=120)

    assert (folder / "checkpoint.txt").read_text().startswith("SIGUSR1 ")  # the fit's own checkpoint path
    assert (folder / "done.txt").exists()  # second run resumed from it
    assert (folder / "starts.txt").read_text().split() == ["0", "1"]  # SLURM_RESTART_COUNT
    assert json.loads((folder / ".hydra" / "sweep_job.json").read_text())["status"] == "done"
    logs = _submitit_logs(tmp_path / "out" / "sweep", job_id)
    assert "Caught signal SIGUSR2" in logs and "JOB REQUEUE" in logs
    if gpu:
        assert (folder / "gpus.txt").read_text() == "1"
