"""`crm demo` end to end, as a newcomer runs it, and its report in headless Chromium: every section
drawn from demo data, a churn model, its watch list and drift included.

`make test` runs a smaller demo: 400 subscribers over six complete months, the fewest that allow a
churn model (it needs four labelled months, and a month is labelled once M+2 is complete), about
5 minutes. The demo as `make demo` runs it (1,000 subscribers, eight months, about 10 minutes) is
`make demo-test` (marker `demo`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crm_pipeline import cli
from crm_pipeline.errors import EXIT_OK
from crm_pipeline.pipeline.churn import SCORE_COLUMNS
from crm_pipeline.pipeline.marts import MART_TABLES
from crm_pipeline.report.sections import SECTION_IDS
from crm_pipeline.settings import REPO_ROOT
from tests.report_browser import open_report

pytestmark = [pytest.mark.integration]


@pytest.mark.demo
def test_demo_writes_a_report_with_every_section_drawn(tmp_path):
    _check_demo_report(tmp_path, [], "August 2026", "demo-report.png")


def test_a_smaller_demo_writes_a_report_with_every_section_drawn(tmp_path, spark, monkeypatch, capsys):
    # 185 days: January to June complete, with the first days of July (June's late CDRs); two
    # shuffle partitions for a few hundred subscribers, as the other pipeline runs of the suite
    out = _check_demo_report(tmp_path, ["--subscribers", "400", "--days", "185"], "June 2026",
                             "small-demo-report.png", {"CRM_SHUFFLE_PARTITIONS": "2"})
    _check_rescore_equals_rebuild(tmp_path / "demo" / "lake", "2026-06", out, monkeypatch, capsys)


def _check_rescore_equals_rebuild(lake: Path, month: str, demo_out: str, monkeypatch, capsys) -> None:
    """The demo's rescore (after `crm train` fitted the model that scores `month`) rebuilt only the
    marts that hold churn scores, from the stored subscriber months and churn features; a rebuild
    of every mart of the month from silver and the rollups, with the same model, finds all of them
    unchanged (the content fingerprints `crm analyse` compares before writing)."""
    rescore = demo_out[demo_out.index(f"analyse: rescoring 1 months {month} .. {month}"):]
    rescore = rescore[:rescore.index("analyse: gold written")]
    assert re.findall(r"gold/(\w+): built and validated", rescore) == \
        [name for name in MART_TABLES if name in SCORE_COLUMNS]
    monkeypatch.delenv("CRM_MSISDN_HMAC_KEY", raising=False)  # the demo's key, as the demo ran
    capsys.readouterr()
    assert cli.main(["analyse", "--lake", str(lake), "--month", month, "--demo-key"]) == EXIT_OK
    assert f"analyse: unchanged, not rewritten: {', '.join(MART_TABLES)}" in capsys.readouterr().out


def _check_demo_report(tmp_path, args: list[str], month: str, screenshot: str, settings: dict | None = None) -> str:
    folder = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("CRM_MSISDN_HMAC_KEY", "CRM_PROGRESS")}
    env.update(settings or {})
    done = subprocess.run([sys.executable, "-m", "crm_pipeline.cli", "demo", "--dir", str(folder), *args],
                          capture_output=True, text=True, env=env, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    (report,) = folder.glob("report-*.html")
    assert f"the CRM report of {month} (charts; opens offline in any browser): {report}" in done.stdout
    seen = open_report(report, list(SECTION_IDS), screenshot=REPO_ROOT / "var" / "report" / screenshot)
    assert seen.console_errors == [] and seen.requests == []
    assert [s["id"] for s in seen.sections] == list(SECTION_IDS)
    for s in seen.sections:
        assert not s["empty"], f"{s['id']} has nothing to show on demo data"
        assert s["charts"] and all(marks > 0 for marks in s["charts"]), s
    return done.stdout
