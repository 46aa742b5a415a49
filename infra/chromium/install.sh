#!/usr/bin/env bash
# Install Debian's Chromium when it is missing: the report's browser test opens the report in it
# headless (tests/integration/test_report.py, driven by Playwright with this executable).
# Run as root, or install `chromium` from your distribution yourself.
set -euo pipefail
if command -v chromium > /dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "Chromium not found: install Debian's 'chromium' package (sudo apt-get install chromium)," \
         "then run make again" >&2
    exit 1
fi
echo "installing Debian's chromium package"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq --no-install-recommends chromium > /dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium > /dev/null
fi
command -v chromium > /dev/null
