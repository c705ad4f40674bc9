"""The official BIDS validator (``bids-validator-deno``, from PyPI) run on a folder, as a test helper."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest


def validator_issues(folder: Path) -> list[dict]:
    """Every issue ``bids-validator-deno FOLDER --format json`` reports (skips the test without the validator)."""
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        pytest.skip("bids-validator-deno is not installed (pip install bids-validator-deno)")
    done = subprocess.run([exe, str(folder), "--format", "json"], capture_output=True, text=True, timeout=300)
    return json.loads(done.stdout)["issues"]["issues"]


def assert_bids_valid(folder: Path) -> list[dict]:
    """Fail with the validator's errors, if any; return its warnings."""
    issues = validator_issues(folder)
    errors = [f"{i['code']} {i.get('subCode') or ''} {i.get('location')}" for i in issues if i["severity"] == "error"]
    assert not errors, f"{len(errors)} BIDS validator errors in {folder}:\n" + "\n".join(errors[:20])
    return [i for i in issues if i["severity"] != "error"]


#: The warnings an OUT_DIR may carry, each explained in its README.md.
EXPECTED_WARNINGS = {"SIDECAR_KEY_RECOMMENDED", "TOO_FEW_AUTHORS", "NIFTI_UNIT"}
