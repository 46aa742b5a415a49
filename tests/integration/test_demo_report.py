"""`crm demo` end to end, as a newcomer runs it, and its report in headless Chromium: every section
drawn from demo data, a churn model, its watch list and drift included (about 10 minutes:
`make demo-test`, marker `demo`).

`make test` checks the same report, every section drawn, on the session's pipeline run: the demo's
data made smaller, 400 subscribers over six complete months (tests/integration/test_report.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from crm_pipeline.report.sections import SECTION_IDS
from crm_pipeline.settings import REPO_ROOT
from tests.report_browser import open_report

pytestmark = [pytest.mark.integration]


@pytest.mark.demo
def test_demo_writes_a_report_with_every_section_drawn(tmp_path):
    folder = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_MSISDN_HMAC_KEY", "CRM_PROGRESS")}
    done = subprocess.run([sys.executable, "-m", "crm_pipeline.cli", "demo", "--dir", str(folder)],
                          capture_output=True, text=True, env=env, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = folder.glob("report-*.html")
    assert f"the CRM report of August 2026 (charts; opens offline in any browser): {report}" in done.stdout
    seen = open_report(report, list(SECTION_IDS), screenshot=REPO_ROOT / "var" / "report" / "demo-report.png")
    assert seen.console_errors == [] and seen.requests == []
    assert [s["id"] for s in seen.sections] == list(SECTION_IDS)
    for s in seen.sections:
        assert not s["empty"], f"{s['id']} has nothing to show on demo data"
        assert s["charts"] and all(marks > 0 for marks in s["charts"]), s
