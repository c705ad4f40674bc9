"""Crash safety: processes killed with SIGKILL at seeded random moments, then resumed.

The fast tests kill writers (an atomic file writer, the fingerprint store writer) in the
middle of their work and check that what is on disk is always a complete old or new file,
or a resumable store whose finished entries are all correct. The slow test runs the real
command line (``python -m pavi_parcel.cli fit ...``) on a tiny simulated cohort, kills it
during ingestion, fingerprinting, fitting and export, reruns the same command, and compares
the final maps byte for byte with those of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MNI = "MNI152NLin2009cAsym"


def _start(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=ENV, cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _go(proc: subprocess.Popen) -> None:
    """Let a paced writer start its next entry."""
    proc.stdin.write("go\n")
    proc.stdin.flush()


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll until ``path`` exists (True) or the process ends first (False)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError(f"{path} never appeared")


# --------------------------------------------------------------------------- atomic files
ATOMIC_WRITER = """
    import sys
    from pathlib import Path
    from pavi_parcel.io.atomic import atomic_write
    target = Path(sys.argv[1])
    i = 0
    while True:
        i += 1
        with atomic_write(target) as tmp:
            with open(tmp, "wb") as fh:
                for _ in range(64):
                    fh.write(bytes([i % 251]) * 65536)      # 4 MiB of one byte value per version
        (target.parent / "started").touch()
"""


def test_atomic_files_are_old_or_new_after_sigkill(tmp_path):
    from pavi_parcel.io.atomic import remove_stale_temporaries

    rng = random.Random(7)
    target = tmp_path / "map.bin"
    for _ in range(4):
        proc = _start(ATOMIC_WRITER, str(target))
        _wait_for(tmp_path / "started", proc, timeout=60)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = target.read_bytes()
        assert len(data) == 64 * 65536 and data.count(data[:1]) == len(data)   # one complete version
        (tmp_path / "started").unlink()
    leftovers = list(tmp_path.glob(".tmp-*"))
    assert remove_stale_temporaries(tmp_path) == len(leftovers)
    assert not list(tmp_path.glob(".tmp-*"))


# --------------------------------------------------------------------------- fingerprint store
STORE_WRITER = """
    import sys
    from pathlib import Path
    import numpy as np
    from pavi_parcel.stores.fingerprints import FingerprintWriter
    from pavi_parcel.spaces import FsaverageSpace, VolumeSpace
    S, T, N, W = 6, 3, 20000, 40
    writer = FingerprintWriter(Path(sys.argv[1]), [f"{s:02d}" for s in range(S)], ["1", "2", "3"],
                               np.ones((S, T), bool), np.arange(N), np.arange(8 * W),
                               VolumeSpace("x", (N, 1, 1), np.eye(4)), 0.1, {"test": 1})
    for s in range(S):
        for t in range(T):
            if not writer.is_done(s, t):
                sys.stdin.readline()  # paced by the test: one entry per "go", so kills land mid-entry
                entry = np.random.default_rng([s, t]).integers(0, 256, (N, W), dtype=np.uint8)
                writer.write(s, t, entry)
                print("entry", flush=True)
    writer.finish()
"""


def _entry(s: int, t: int) -> np.ndarray:
    return np.random.default_rng([s, t]).integers(0, 256, (20000, 40), dtype=np.uint8)


def test_fingerprint_store_resumes_after_sigkill_with_every_finished_entry_intact(tmp_path):
    """Kills land after a seeded random number of entries, a few milliseconds into the next one."""
    import h5py

    from pavi_parcel.stores.fingerprints import FingerprintStore

    rng = random.Random(11)
    target = tmp_path / "fingerprints.h5"
    partial = tmp_path / "fingerprints.h5.partial"
    kills, flagged = 0, []
    for _ in range(4):
        proc = _start(STORE_WRITER, str(target))
        wanted = rng.randint(1, 4)
        for _ in range(wanted):  # let `wanted` entries through, one at a time
            _go(proc)
            if not proc.stdout.readline():
                break
        _go(proc)  # start the next entry...
        time.sleep(rng.uniform(0.0, 0.004))  # ...and kill a few milliseconds into it
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        with h5py.File(partial, "r") as h5:   # every entry flagged complete holds the right bytes
            done = list(zip(*np.nonzero(h5["complete"][()])))
            for s, t in done:
                np.testing.assert_array_equal(h5["bits"][s, t], _entry(int(s), int(t)))
        flagged.append(len(done))
    proc = _start(STORE_WRITER, str(target))
    out, err = proc.communicate(input="go\n" * 18, timeout=120)
    assert proc.returncode == 0, err
    assert kills == 4 and flagged == sorted(flagged) and 0 < flagged[-1] < 18   # progress kept across kills
    with FingerprintStore(target) as store:
        for s in range(6):
            raw = store.read_packed(s, None)
            for t in range(3):
                np.testing.assert_array_equal(raw[t], _entry(s, t))


# --------------------------------------------------------------------------- the whole pipeline
FIT_ARGS = ["--space", MNI, "--n-networks", "4", "--device", "cpu", "seed=3", "fit.max_steps=12",
            "fit.checkpoint_every=2", "fingerprints.seed_spacing_mm=24", "ingest.min_frames=20",
            "export.report=false", "n_jobs=1"]
MAP_SUFFIXES = (".nii.gz", ".func.gii", ".label.gii", ".tsv")


@pytest.fixture(scope="module")
def tiny_bids(tmp_path_factory):
    from pavi_parcel.simulate import simulate_dataset

    root = tmp_path_factory.mktemp("crash")
    sim = simulate_dataset(root / "sim", n_subjects=2, n_sessions=2, n_frames=60, n_networks=4, seed=0,
                           space=MNI, resolution_mm=8, progress=False)
    return sim.bids_dir


def _fit_command(bids: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pavi_parcel.cli", "fit", str(bids), str(out), *FIT_ARGS]


def _maps(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name.endswith(MAP_SUFFIXES)
            and not {"work", "model"} & set(p.relative_to(out).parts)}


class StderrWatch:
    """Collect a child's stderr in a thread, to know which stage it is in (its progress bars)."""

    STAGES = (("ingest:", "ingest"), ("fingerprints:", "fingerprints"), ("init:", "fit"), ("fit pavi_e", "fit"),
              ("posteriors", "fit"), ("export:", "export"), ("connectome:", "connectome"))

    def __init__(self, proc: subprocess.Popen):
        import threading

        self.text = ""
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen) -> None:
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            self.text += chunk.decode(errors="replace")

    def wait_for(self, keyword: str, proc: subprocess.Popen, timeout: float = 300.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if keyword in self.text:
                return True
            if proc.poll() is not None:
                self._thread.join(5)
                return keyword in self.text
            time.sleep(0.005)
        raise AssertionError(f"'{keyword}' never appeared:\n{self.text[-2000:]}")

    def stage(self) -> str:
        """The stage of the last progress bar that appeared."""
        seen = [(self.text.rfind(key), stage) for key, stage in self.STAGES if key in self.text]
        return max(seen)[1] if seen else "validation"


# the progress bar (or file) that shows a stage has started, and how long to wait (at most)
# before the kill: short against each stage's length, so every kill lands in it. The fingerprint
# stage of this cohort lasts a few milliseconds: the child is frozen (SIGSTOP) the moment its
# partial store appears, then killed.
KILL_PLAN = [("ingest:", 0.8), ("freeze:work/fingerprints.h5.partial", 0.0), ("fit pavi_e", 0.5),
             ("fit pavi_e", 1.0), ("posteriors", 0.3), ("file:dataset_description.json", 0.1), ("connectome:", 0.2)]


def _freeze_when(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> bool:
    """Stop the process (SIGSTOP) as soon as ``path`` exists; False when it ends first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            proc.send_signal(signal.SIGSTOP)
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.0002)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.slow
def test_sigkill_at_every_stage_then_rerun_gives_byte_identical_maps(tiny_bids, tmp_path):
    start = time.monotonic()
    reference = tmp_path / "reference"
    done = subprocess.run(_fit_command(tiny_bids, reference), env=ENV, cwd=ROOT, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _maps(reference)
    # label and QC tables, group + 2 subjects x (probseg, dseg, entropy); connectomes: 2 subjects x 2 runs x
    # (time series, correlation) and 2 subjects x (correlation, partial correlation)
    assert len(expected) == 2 + 3 * 3 + 2 * 2 * 2 + 2 * 2

    rng = random.Random(2024)
    out = tmp_path / "interrupted"
    killed_in = []
    for keyword, max_delay in KILL_PLAN:
        proc = subprocess.Popen(_fit_command(tiny_bids, out), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        watch = StderrWatch(proc)
        kind, _, target = keyword.partition(":") if keyword.startswith(("file:", "freeze:")) else ("bar", "", keyword)
        if kind == "freeze":
            started = _freeze_when(out / target, proc)
        elif kind == "file":
            started = _wait_for(out / target, proc, 300)
        else:
            started = watch.wait_for(keyword, proc)
        if started:
            time.sleep(rng.uniform(0.0, max_delay))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            in_fingerprints = (out / target).exists() and not (out / "work" / "fingerprints.h5").exists()
            killed_in.append("export" if kind == "file" else "fingerprints" if kind == "freeze" and in_fingerprints
                             else watch.stage())
        else:
            assert proc.returncode == 0, watch.text[-3000:]
            break
    assert {"ingest", "fingerprints", "fit", "export"} <= set(killed_in), killed_in
    final = subprocess.run(_fit_command(tiny_bids, out), env=ENV, cwd=ROOT, capture_output=True, text=True,
                           timeout=400)
    assert final.returncode == 0, final.stderr[-3000:]
    assert _maps(out) == expected                    # byte for byte
    assert not list(out.rglob(".tmp-*")) and not (out / "work" / "fingerprints.h5.partial").exists()
    print(f"killed in {killed_in}; total {time.monotonic() - start:.0f} s")
