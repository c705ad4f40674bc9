#!/usr/bin/env bash
# Install headless Chromium and its WebDriver (Debian/Ubuntu), used by the browser test of
# the HTML report (pytest -m slow tests/test_report.py). Safe to run again: does nothing when
# both are already installed.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    echo "chromium and chromedriver already installed: $(chromium --version 2>/dev/null || true)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium chromium-driver
echo "installed: $(chromium --version 2>/dev/null || true)"
