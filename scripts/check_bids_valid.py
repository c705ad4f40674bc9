"""Run the official BIDS validator on a pavi-parcel OUT_DIR; exit 1 on any error.

Usage::

    python scripts/check_bids_valid.py OUT_DIR

Runs ``bids-validator-deno OUT_DIR --format json`` (``pip install bids-validator-deno``) and prints
one line: the number of errors and warnings and the codes of each, then every error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter


def main(folder: str) -> int:
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        print("bids-validator-deno is not installed: pip install bids-validator-deno", file=sys.stderr)
        return 1
    done = subprocess.run([exe, folder, "--format", "json"], capture_output=True, text=True, timeout=600)
    issues = json.loads(done.stdout)["issues"]["issues"]
    errors = [i for i in issues if i["severity"] == "error"]
    warnings = Counter(i["code"] for i in issues if i["severity"] != "error")
    codes = ", ".join(sorted({e["code"] for e in errors})) or "-"
    listed = ", ".join(f"{c} x{n}" for c, n in sorted(warnings.items())) or "-"
    print(f"BIDS validator on {folder}: {len(errors)} errors ({codes}), {sum(warnings.values())} warnings ({listed})")
    for issue in errors:
        print(f"  {issue['code']} {issue.get('subCode') or ''} {issue.get('location')}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
