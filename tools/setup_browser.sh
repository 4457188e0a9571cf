#!/usr/bin/env bash
# Make the browser tests of the try-it page runnable (tests/service/test_web_page.py):
# Debian's Chromium, driven by Playwright for Python. Playwright's own browser download
# (`playwright install`) is never used: the tests launch /usr/bin/chromium.
#
#   sudo tools/setup_browser.sh [PYTHON]     # PYTHON defaults to .venv/bin/python
#
# Without it the browser tests skip and say which of the two is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-.venv/bin/python}"

if ! command -v chromium >/dev/null 2>&1; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi
"$PYTHON" -m pip install -q "playwright>=1.40"
chromium --version
"$PYTHON" -c "import importlib.metadata as m, playwright.sync_api; print('playwright', m.version('playwright'))"
