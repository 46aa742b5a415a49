"""`crm report` on the shared pipeline run (January to June; a churn model scores June), opened in
headless Chromium: every section by its id, every chart drawn, no console error, no request to any
host, the numbers those of the warehouse, no contact data. The report of June has every section
drawn, the model's and the watch list's included; the report of March, a month no model could
score yet, says so in those two sections. The whole demo as `make demo` runs it is `make demo-test`
(tests/integration/test_demo_report.py)."""

from __future__ import annotations

import re
from datetime import date

import duckdb
import pytest

from crm_pipeline import cli
from crm_pipeline.entrypoints.common import year_month
from crm_pipeline.report.sections import SECTION_IDS, cny
from crm_pipeline.settings import REPO_ROOT
from tests.report_browser import open_report

pytestmark = pytest.mark.integration

#: sections that need a churn model's scores: the run's model, trained on January and February and
#: tested on April (a month is labelled once the two after it are complete), uses labels that
#: reach June, so it scores June and no earlier month
NEED_A_MODEL = {"churn-model", "watchlist"}


def _report(published, tmp_path_factory, month: str):
    out = tmp_path_factory.mktemp("report") / f"report-{month}.html"
    code = cli.main(["report", "--lake", published["lake"].root, "--month", month, "--out", str(out)])
    assert code == 0
    seen = open_report(out, list(SECTION_IDS), screenshot=REPO_ROOT / "var" / "report" / f"report-{month}.png")
    return out, seen


@pytest.fixture(scope="module")
def report(published, tmp_path_factory):
    """The report of March: no model scores it."""
    return _report(published, tmp_path_factory, "2026-03")


@pytest.fixture(scope="module")
def latest(published, tmp_path_factory):
    """The report of June, the latest month, which the model scores."""
    return _report(published, tmp_path_factory, "2026-06")


def _sections_drawn(seen, without: set[str]) -> None:
    assert [s["id"] for s in seen.sections] == list(SECTION_IDS)
    assert all(s["present"] for s in seen.sections)
    for s in seen.sections:
        if s["id"] in without:
            assert s["empty"] and not s["charts"], s
            continue
        assert not s["empty"], f"{s['id']} says it has nothing to show"
        assert s["charts"], f"{s['id']} has no chart"
        assert all(marks > 0 for marks in s["charts"]), f"{s['id']}: a chart drew nothing: {s['charts']}"


def test_every_section_of_the_latest_month_is_drawn_its_model_and_watch_list_included(latest):
    _sections_drawn(latest[1], without=set())


def test_every_section_is_there_in_order_and_its_charts_are_drawn(report):
    _sections_drawn(report[1], without=NEED_A_MODEL)


def test_page_opens_offline_without_console_errors(report, latest):
    for _, seen in (report, latest):
        assert seen.console_errors == []
        assert seen.requests == []  # Plotly is inlined: the page asks no host for anything


def test_sections_without_a_model_say_why(report):
    _, seen = report
    assert "Not available yet: no churn model scored this month yet" in seen.text
    assert "Not available yet: no watch list this month" in seen.text


def test_headline_numbers_are_the_warehouses(report, published):
    _, seen = report
    con = duckdb.connect(str(published["warehouse"]), read_only=True)
    try:
        active, revenue, arpu, adds, churned = con.execute(
            "SELECT active_subscribers, revenue_fen, arpu_fen, gross_adds, churned_subscribers FROM crm.kpi_month "
            "WHERE dimension = 'ALL' AND month = DATE '2026-03-01'").fetchone()
        top20, gini = con.execute("SELECT top20_revenue_share, gini FROM crm.revenue_concentration "
                                  "WHERE month = DATE '2026-03-01'").fetchone()
        segments = dict(con.execute("SELECT value_segment, subscribers FROM crm.segment_summary "
                                    "WHERE month = DATE '2026-03-01'").fetchall())
    finally:
        con.close()
    assert (f"March 2026: {active:,} active subscribers ({adds:,} added, {churned:,} churned), "
            f"revenue {cny(revenue)}, ARPU {cny(arpu)}.") in seen.text
    assert f"The top 20 % of subscribers by revenue bring {100 * top20:.1f} % of it; Gini {gini:.3f}" in seen.text
    for segment, n in segments.items():
        assert f"{segment} {n:,}" in seen.text  # the value matrix's counts


def test_no_contact_data_in_the_report(report, published):
    out, _ = report
    restricted = published["warehouse"].with_name("warehouse_restricted.duckdb")
    con = duckdb.connect(str(restricted), read_only=True)
    try:
        contacts = con.execute("SELECT msisdn, customer_name FROM crm_restricted.contact").fetchall()
    finally:
        con.close()
    html = out.read_text(encoding="utf-8")
    assert contacts
    leaked = [m for m, name in contacts if m in html or (name and re.search(re.escape(name), html))]
    assert leaked == []


def test_month_not_analysed_is_one_line_exit_2(published, tmp_path, capsys):
    code = cli.main(["report", "--lake", published["lake"].root, "--month", "2026-07",
                     "--out", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "r.html").exists()
    assert err.strip().splitlines() == [
        f"crm report: month 2026-07 has not been analysed in lake {published['lake'].root}: analysed months are "
        "2026-01 to 2026-06 (a month is analysed once it is complete: `crm status` says what it waits for)"]


def test_default_month_is_the_latest_analysed(published, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["report", "--lake", published["lake"].root]) == 0
    assert (tmp_path / "crm-report-2026-06.html").is_file()
    assert "report of 2026-06 written to crm-report-2026-06.html" in capsys.readouterr().out


def test_a_folder_that_is_no_lake_is_a_usage_error(tmp_path, capsys):
    assert cli.main(["report", "--lake", str(tmp_path)]) == 2
    assert "is not a lake this pipeline analysed (no gold/ folder)" in capsys.readouterr().err


def test_month_argument_format(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", "--lake", "x", "--month", "2026-13"])
    assert exit_.value.code == 2
    assert "argument --month: expected YYYY-MM, got '2026-13'" in capsys.readouterr().err
    assert year_month("2026-03") == year_month("2026-03-01") == date(2026, 3, 1)
