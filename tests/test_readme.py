"""The README's Python example runs as written (in a fresh folder, as a new user would)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.mark.slow
def test_the_python_example_of_the_readme_runs_as_written(tmp_path):
    code = readme_example()
    assert "from pavi_parcel import PaviParcellation, run_pipeline" in code
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("['01', '02', '03'] (3, 18715, 7) (18715, 7)")
    assert lines[1] == "(1, 18715, 7)"
    assert (tmp_path / "example" / "pavi" / "report.html").is_file()
    assert (tmp_path / "example" / "model" / "estimator.json").is_file()
