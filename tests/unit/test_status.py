"""The operations view (`crm status`, crm_ops.delivery_status and month_status) on a lake whose ops
tables are written as the pipeline writes them, judged at a fixed clock (--as-of)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, time, timedelta

import pyarrow as pa
import pytest

from crm_pipeline import ops, status
from crm_pipeline.feeds import load_feeds
from crm_pipeline.io import delta_rs
from crm_pipeline.pipeline.monthly import month_readiness
from crm_pipeline.settings import LakeLayout

DAILY = [s.feed for s in load_feeds().values() if s.is_daily]
QUARANTINE = pa.schema([("feed", pa.string()), ("business_date", pa.date32()), ("delivery_id", pa.string()),
                        ("source_file", pa.string()), ("line_no", pa.int64()), ("reject_reason", pa.string()),
                        ("reject_detail", pa.string()), ("raw_line", pa.string()), ("run_id", pa.string())])


def deliver(lake: LakeLayout, entries: list[tuple], run: str = "run-1") -> None:
    """Log loaded deliveries and their accounting rows, as `crm ingest` does, in one commit each:
    entries are (feed, day) or (feed, day, loaded, quarantined, delivery id)."""
    ctx = ops.RunContext(run, "crm_daily_ingest", "ingest")
    logged, rows = [], []
    for feed, day, loaded, quarantined, delivery in (e + (10, 0, None)[len(e) - 2:] for e in entries):
        delivery = delivery or f"{feed}/{day:%Y%m%d}/{run}"
        logged.append((feed, day, delivery, run, "LOADED"))
        row = ops.step_row(ctx, ops.utcnow(), "", day)
        row.update(feed=feed, source_file=f"{feed}/{day:%Y%m%d}/{feed.upper()}_{day:%Y%m%d}_001.dat",
                   delivery_id=delivery, rows_read=loaded + quarantined, rows_loaded=loaded,
                   rows_quarantined=quarantined)
        rows.append(row)
    ops.log_deliveries(lake, logged)
    ops.write_pipeline_runs(lake, rows)


def bills(lake: LakeLayout, months: list[date]) -> None:
    """Silver bill lines of `months`, partitioned by bill month as the silver build writes them."""
    from deltalake import write_deltalake

    partition = load_feeds()["bill"].partition_column
    lines = pa.table({"bill_line_id": [f"L{i}" for i in range(len(months))], "bill_month": months,
                      partition: months}, schema=pa.schema([("bill_line_id", pa.string()), ("bill_month", pa.date32()),
                                                            (partition, pa.date32())]))
    write_deltalake(lake.silver("bill"), lines, mode="append", partition_by=[partition])


def days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@pytest.fixture
def lake(tmp_path):
    """March 2026 delivered whole (and 3 days of April) with its bill in April; April delivered to
    the 9th, except cdr_voice which stops on the 8th; one quarantined record on April 8th."""
    lake = LakeLayout(str(tmp_path / "lake"))
    entries = [(feed, d, 10, int((feed, d) == ("cdr_voice", date(2026, 4, 8))), None) for feed in DAILY
               for d in days(date(2026, 3, 1), date(2026, 4, 8) if feed == "cdr_voice" else date(2026, 4, 9))]
    deliver(lake, entries + [("bill", date(2026, 4, 2))])
    bills(lake, [date(2026, 3, 1)])
    delta_rs.append_rows(lake.quarantine, [dict(
        feed="cdr_voice", business_date=date(2026, 4, 8), delivery_id="cdr_voice/20260408/run-1",
        source_file="cdr_voice/20260408/CDR_VOICE_20260408_001.dat", line_no=17, reject_reason="bad_timestamp",
        reject_detail="start_time=2026040899", raw_line="secret raw line 13800138000", run_id="run-1")], QUARANTINE)
    return lake


AS_OF = datetime(2026, 4, 10, 9, 0)  # local time: April 9th's daily deliveries were due at 06:00 today


def test_a_feed_past_its_expected_arrival_is_late_and_the_others_are_loaded(lake):
    st = status.status(lake, AS_OF, days=3)
    by = {(d["feed"], d["business_date"]): d for d in st.deliveries}
    late = by[("cdr_voice", date(2026, 4, 9))]
    assert late["status"] == status.LATE and late["hours_late"] == 3.0
    assert late["expected_by"] == datetime(2026, 4, 10, 6, 0)
    assert [d for d in st.late()] == [late]
    for feed in DAILY:
        for d in days(date(2026, 4, 7), date(2026, 4, 9)):
            if (feed, d) != ("cdr_voice", date(2026, 4, 9)):
                assert by[(feed, d)]["status"] == status.LOADED and by[(feed, d)]["rows_loaded"] == 10
    assert by[("cdr_voice", date(2026, 4, 8))]["rows_quarantined"] == 1
    # an hour before the deadline nothing is late yet: the day is only due
    early = status.status(lake, datetime.combine(date(2026, 4, 10), time(5, 0)), days=3)
    assert not early.late()
    assert {d["status"] for d in early.deliveries if d["business_date"] == date(2026, 4, 9)} == {
        status.LOADED, status.DUE}


def test_the_bill_is_judged_per_billed_month(lake):
    may = status.status(lake, datetime(2026, 5, 5, 7, 0), days=7)
    bill = {d["business_date"]: d for d in may.deliveries if d["feed"] == "bill"}
    assert bill[date(2026, 4, 1)]["status"] == status.LATE  # April's bill was due May 4th, 06:00
    assert bill[date(2026, 4, 1)]["hours_late"] == 25.0
    april = status.status(lake, datetime(2026, 4, 3, 7, 0), days=7)
    bill = {d["business_date"]: d for d in april.deliveries if d["feed"] == "bill"}
    assert bill[date(2026, 3, 1)]["status"] == status.LOADED
    assert bill[date(2026, 3, 1)]["delivery_id"] == "bill/20260402/run-1"


def test_months_say_what_they_wait_for(lake, tmp_path):
    st = status.status(lake, AS_OF, days=3)
    months = {m["month"]: m for m in st.months}
    assert months[date(2026, 3, 1)]["status"] == "COMPLETE"
    assert months[date(2026, 4, 1)]["status"] == "WAITING"
    waits = months[date(2026, 4, 1)]["waiting_for"]
    assert waits.startswith("bill not delivered; ")
    assert "2026-04-09..2026-05-03 not loaded (cdr_voice)" in waits
    assert f"2026-04-10..2026-05-03 not loaded ({', '.join(f for f in DAILY if f != 'cdr_voice')})" in waits
    # built, then published: the state follows gold and crm_ops.publications
    from deltalake import write_deltalake

    write_deltalake(lake.gold("subscriber_month"), pa.table({"month": [date(2026, 3, 1)], "x": [1]}),
                    partition_by=["month"])
    assert status.month_status(lake, AS_OF, status.load_operations_config().timezone)[0]["status"] == "BUILT"
    ops.append_rows_arrow(lake, "publications", [dict(run_id="run-9", table_name="subscriber_month",
                                                      month=date(2026, 3, 1), rows=1, gold_version=0, warehouse="w",
                                                      published_at=datetime(2026, 4, 5, 1, 0))])
    march = status.month_status(lake, AS_OF, status.load_operations_config().timezone)[0]
    assert (march["status"], march["published_run_id"], march["published_at"]) == (
        "PUBLISHED", "run-9", datetime(2026, 4, 5, 9, 0))  # shown in Shanghai time


def test_complete_months_need_the_bill_and_every_day_with_the_late_window():
    loaded = {f: set(days(date(2026, 3, 1), date(2026, 4, 3))) for f in DAILY}
    assert month_readiness(loaded, {date(2026, 3, 1)})[date(2026, 3, 1)] == []
    loaded["ticket"].discard(date(2026, 4, 3))
    assert month_readiness(loaded, {date(2026, 3, 1)})[date(2026, 3, 1)] == ["2026-04-03 not loaded (ticket)"]
    # `through` extends the months shown past the data, never cuts them short
    assert list(month_readiness(loaded, set(), through=date(2026, 3, 1))) == [date(2026, 3, 1), date(2026, 4, 1)]
    assert list(month_readiness(loaded, set(), through=date(2026, 6, 1)))[-1] == date(2026, 6, 1)


def test_failed_quarantined_and_redelivered_days_and_the_landing_zone(lake, tmp_path):
    day = date(2026, 4, 9)
    ctx = ops.RunContext("run-2", "crm_daily_ingest", "ingest")
    ops.write_pipeline_runs(lake, [dict(ops.step_row(ctx, ops.utcnow(), "control file: md5 mismatch", day, "FAILED"),
                                        feed="cdr_voice")])
    deliver(lake, [("ticket", day, 12, 0, "ticket/20260409/second")], run="run-3")
    landing = tmp_path / "landing"
    (landing / "recharge" / "20260409").mkdir(parents=True)  # a re-delivery still being written
    (landing / "recharge" / "20260409" / "RECHARGE_20260409_001.dat").write_text("x\n")
    st = status.status(lake, AS_OF, days=3, landing=str(landing))
    by = {(d["feed"], d["business_date"]): d for d in st.deliveries}
    assert by[("cdr_voice", day)]["status"] == status.FAILED
    assert by[("cdr_voice", day)]["detail"] == "control file: md5 mismatch"
    assert by[("ticket", day)]["deliveries"] == 2 and by[("ticket", day)]["rows_loaded"] == 12
    assert by[("ticket", day)]["delivery_id"] == "ticket/20260409/second"
    assert by[("recharge", day)]["status"] == status.LOADED  # the loaded delivery still stands
    # a complete re-delivery of a loaded day, not ingested yet, is shown, and is not late
    (landing / "plan" / "20260409").mkdir(parents=True)
    (landing / "plan" / "20260409" / "PLAN_20260409_001.dat").write_text("")
    (landing / "plan" / "20260409" / "PLAN_20260409.ctl").write_text(
        "PLAN_20260409_001.dat|0|0|d41d8cd98f00b204e9800998ecf8427e|UTF-8\n")
    again = status.status(lake, AS_OF, days=3, landing=str(landing))
    plan = next(d for d in again.deliveries if (d["feed"], d["business_date"]) == ("plan", day))
    assert plan["status"] == status.ARRIVED and plan["hours_late"] is None and plan not in again.late()
    assert [(q["feed"], q["reason"], q["records"]) for q in st.quarantine] == [("cdr_voice", "bad_timestamp", 1)]
    assert "line 17" in st.quarantine[0]["example"] and "13800138000" not in st.as_json()
    assert [r["status"] for r in st.runs][:1] == ["SUCCESS"] and "FAILED" in {r["status"] for r in st.runs}
    # a folder without its control file, where nothing is loaded yet, is in progress, not late
    (landing / "plan" / "20260410").mkdir(parents=True)
    (landing / "plan" / "20260410" / "PLAN_20260410_001.dat").write_text("x\n")
    later = status.status(lake, datetime(2026, 4, 11, 9, 0), days=2, landing=str(landing))
    plan = {d["business_date"]: d for d in later.deliveries if d["feed"] == "plan"}
    assert plan[date(2026, 4, 10)]["status"] == status.IN_PROGRESS
    assert plan[date(2026, 4, 10)]["hours_late"] == 3.0 and plan[date(2026, 4, 10)] in later.late()  # past due


def test_the_expected_arrivals_are_read_from_the_config_and_checked(tmp_path):
    good = tmp_path / "ops.json"
    good.write_text(json.dumps({"timezone": "Asia/Shanghai", "default": {"days_after": 1, "by": "07:30"},
                                "feeds": {"bill": {"day_of_next_month": 5}, "ticket": {"days_after": 2}}}))
    config = status.load_operations_config(good)
    assert config.expectation("ticket").due(date(2026, 4, 9)) == datetime(2026, 4, 11, 7, 30)
    assert config.expectation("bill").due(date(2026, 3, 1)) == datetime(2026, 4, 5, 7, 30)
    assert not config.expectation("survey").expected  # the optional feed
    for bad, message in (({"feeds": {"sms": {}}}, "no such feed"), ({"default": {"by": "6am"}}, "must be HH:MM"),
                         ({"feeds": {"ticket": {"at": "06:00"}}}, "unknown setting")):
        good.write_text(json.dumps(bad))
        with pytest.raises(Exception, match=message):
            status.load_operations_config(good)


def test_crm_status_prints_the_view_and_alerts_on_late_deliveries(lake, tmp_path):
    import os

    cli = [sys.executable, "-m", "crm_pipeline.cli", "status", "--lake", lake.root, "--as-of", "2026-04-10T09:00",
           "--days", "3"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_ALERT")}
    shown = subprocess.run(cli, capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    voice = next(line for line in shown.stdout.splitlines() if line.strip().startswith("cdr_voice"))
    assert "LATE 2026-04-09 (3.0 h past 04-10 06:00)" in voice and " 2/3 " in voice
    assert "2026-03  COMPLETE" in shown.stdout and "bad_timestamp" in shown.stdout
    alerted = subprocess.run(cli + ["--alert"], capture_output=True, text=True, env=env)
    assert alerted.returncode == 1 and "1 late or failed deliveries" in alerted.stderr
    as_json = json.loads(subprocess.run(cli + ["--json"], capture_output=True, text=True, env=env).stdout)
    assert {d["status"] for d in as_json["deliveries"]} == {"LOADED", "LATE", "DUE"}
    assert [(d["feed"], d["business_date"]) for d in as_json["deliveries"] if d["status"] == "DUE"] == [
        ("bill", "2026-04-01")]  # April's bill, due on May 4th
    missing = subprocess.run([sys.executable, "-m", "crm_pipeline.cli", "status", "--lake", str(tmp_path / "none")],
                             capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "no ops/ folder" in missing.stderr


def test_an_alert_is_logged_and_posted_to_the_configured_webhook(monkeypatch, caplog):
    import http.server
    import threading

    from crm_pipeline import alerts

    received = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("CRM_ALERT_EMAIL", raising=False)
        monkeypatch.setenv("CRM_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hooks/secret-token")
        assert alerts.send("cdr_voice late", ["cdr_voice 2026-04-09: LATE"]) == ["log", "webhook"]
        assert received == [{"source": "crm-pipeline", "subject": "cdr_voice late",
                             "text": "cdr_voice late\ncdr_voice 2026-04-09: LATE", "lines": ["cdr_voice 2026-04-09: LATE"]}]
        server.shutdown()
        server.server_close()
        # a webhook that cannot be reached is logged, without its secret path, and never raises
        assert alerts.send("again", []) == ["log"]
        assert "alert not sent to the webhook http://127.0.0.1" in caplog.text and "secret-token" not in caplog.text
    finally:
        server.server_close()
