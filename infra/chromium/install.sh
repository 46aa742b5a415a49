#!/usr/bin/env bash
# Debian's Chromium, when missing: the report's browser test opens the report in it headless
# (tests/integration/test_report.py, driven by Playwright with this executable).
exec "$(dirname "$0")/../debian-package.sh" chromium "Chromium" sh -c 'command -v chromium'
