"""What the DAGs decide (crm_pipeline.orchestration, crm_pipeline.dag_support): which delivery a daily
run waits for and until when, the once-only late alert, and the months the monthly analytics
(re)build, on a lake whose ops tables are written as the pipeline writes them."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pyarrow as pa
import pytest

from crm_pipeline import ops, orchestration
from crm_pipeline.orchestration import ARRIVED, GIVE_UP, WAITING, awaited, months_to_build, verdict
from crm_pipeline.pipeline.monthly import record_inputs
from crm_pipeline.settings import LakeLayout
from crm_pipeline.status import load_operations_config
from tests.conftest import write_delivery
from tests.unit.test_status import DAILY, bills, days, deliver

CONFIG = load_operations_config()


def test_a_daily_feed_is_awaited_for_its_business_date_until_its_wait_has_passed():
    what = awaited("ticket", date(2026, 2, 3), CONFIG)
    assert (what.first, what.last, what.label) == (date(2026, 2, 3), date(2026, 2, 3), "ticket 2026-02-03")
    assert what.due == datetime(2026, 2, 4, 6, 0)
    assert what.give_up_at == datetime(2026, 2, 4, 8, 0)  # config/operations.json: wait_hours 2


def test_the_bill_is_awaited_on_its_due_day_only_and_optional_feeds_never():
    bill = awaited("bill", date(2026, 2, 3), CONFIG)  # the run of 4 February: the bill of January is due
    assert (bill.first, bill.last, bill.due, bill.label) == (
        date(2026, 2, 1), date(2026, 2, 4), datetime(2026, 2, 4, 6, 0), "bill of 2026-01")
    assert "not waited for on this run" in awaited("bill", date(2026, 2, 4), CONFIG)
    assert "optional" in awaited("survey", date(2026, 2, 3), CONFIG)


def test_the_late_alert_goes_out_once_on_the_first_look_past_due():
    what = awaited("ticket", date(2026, 2, 3), CONFIG)
    due, interval = what.due, timedelta(minutes=10)
    assert verdict(True, what, due + timedelta(hours=5), None) == (ARRIVED, False)
    assert verdict(False, what, due - interval, None) == (WAITING, False)
    assert verdict(False, what, due + interval / 2, None) == (WAITING, True)  # first look, late
    assert verdict(False, what, due + interval / 2, due - interval / 2) == (WAITING, True)  # first look past due
    assert verdict(False, what, due + 2 * interval, due + interval) == (WAITING, False)  # alerted already
    assert verdict(False, what, what.give_up_at, what.give_up_at - interval) == (GIVE_UP, False)
    assert verdict(False, what, what.give_up_at + interval, None) == (GIVE_UP, True)  # a run started late


def test_a_delivery_has_arrived_once_its_control_file_is_written(tmp_path):
    what = awaited("ticket", date(2026, 2, 3), CONFIG)
    assert not orchestration.arrived(str(tmp_path), what)
    write_delivery(tmp_path, "ticket", date(2026, 2, 3), [["T1|13800000001|20260203100000|HOTLINE|BILLING|1||"]],
                   control=False)
    assert not orchestration.arrived(str(tmp_path), what)  # still being written
    write_delivery(tmp_path, "ticket", date(2026, 2, 3), [["T1|13800000001|20260203100000|HOTLINE|BILLING|1||"]])
    assert orchestration.arrived(str(tmp_path), what)


@pytest.fixture
def lake(tmp_path):
    """January and February 2026 delivered whole (with March 1-3), both bills in."""
    lake = LakeLayout(str(tmp_path / "lake"))
    deliver(lake, [(feed, d) for feed in DAILY for d in days(date(2026, 1, 1), date(2026, 3, 3))]
            + [("bill", date(2026, 2, 2)), ("bill", date(2026, 3, 2))])
    bills(lake, [date(2026, 1, 1), date(2026, 2, 1)])
    return lake


def _build(lake: LakeLayout, months: list[date], run: str) -> None:
    """What `crm analyse` records of a build: the deliveries each month read."""
    record_inputs(lake, ops.RunContext(run, "cli", "analyse"), months, ops.loaded_deliveries(lake))


def test_months_to_build_are_the_complete_ones_not_built_from_the_deliveries_loaded(lake):
    jan, feb = date(2026, 1, 1), date(2026, 2, 1)
    assert months_to_build(lake) == {jan: "complete, not built yet", feb: "complete, not built yet"}
    _build(lake, [jan], "analyse-1")
    assert months_to_build(lake) == {feb: "complete, not built yet"}
    _build(lake, [feb], "analyse-2")
    assert months_to_build(lake) == {}
    # a re-delivery of 20 January: January is rebuilt, and February, whose trailing windows read it
    deliver(lake, [("recharge", date(2026, 1, 20), 9, 0, "recharge/20260120/again")], run="run-2")
    assert months_to_build(lake) == {jan: "1 delivery loaded since its last build", feb: "reads 2026-01, rebuilt"}
    from deltalake import write_deltalake

    from crm_pipeline import status

    write_deltalake(lake.gold("subscriber_month"), pa.table({"month": [jan, feb], "x": [1, 2]}), partition_by=["month"])
    months = {m["month"]: m for m in status.month_status(lake, datetime(2026, 3, 5, 9, 0), CONFIG.timezone)}
    assert (months[jan]["status"], months[jan]["waiting_for"]) == ("BUILT", "a rebuild: 1 delivery loaded since its "
                                                                            "last build")
    _build(lake, [jan, feb], "analyse-3")
    assert months_to_build(lake) == {}
    assert status.month_status(lake, datetime(2026, 3, 5, 9, 0), CONFIG.timezone)[0]["waiting_for"] == \
        "the next publish"
    # a late day of the next month's late window (3 March) re-delivered: February only
    deliver(lake, [("cdr_voice", date(2026, 3, 3), 9, 0, "cdr_voice/20260303/again")], run="run-3")
    assert months_to_build(lake) == {feb: "1 delivery loaded since its last build"}


def test_a_month_reads_its_days_its_late_days_and_the_bill_delivered_after_it(lake):
    inputs = orchestration.month_inputs(date(2026, 1, 1), ops.loaded_deliveries(lake))
    assert {d for f, d in inputs if f == "cdr_voice"} == set(days(date(2026, 1, 1), date(2026, 2, 3)))
    assert {d for f, d in inputs if f == "bill"} == {date(2026, 2, 2)}


def test_a_monthly_run_builds_the_months_it_is_given_else_the_months_ready(lake):
    from airflow.sdk.exceptions import AirflowSkipException

    from crm_pipeline.dag_support import months_of_run

    assert months_of_run(lake.root, {"months": ["2026-02", "2026-01-01"]}) == "2026-01-01,2026-02-01"
    assert months_of_run(lake.root, {}) == "2026-01-01,2026-02-01"
    _build(lake, [date(2026, 1, 1), date(2026, 2, 1)], "analyse-1")
    with pytest.raises(AirflowSkipException, match="no month to build"):
        months_of_run(lake.root, {"months": []})


def test_a_month_built_before_its_inputs_were_recorded_is_rebuilt_once(lake):
    from deltalake import write_deltalake

    write_deltalake(lake.gold("subscriber_month"), pa.table({"month": [date(2026, 1, 1)], "x": [1]}),
                    partition_by=["month"])
    assert months_to_build(lake) == {date(2026, 1, 1): "built with no record of the deliveries it read",
                                     date(2026, 2, 1): "complete, not built yet"}


def test_a_rescore_reuses_the_stored_marts_of_a_month_only_when_they_were_built_from_the_deliveries_loaded(lake):
    """`crm analyse --rescore` scores a month again from its stored marts (`rescore_months`) only
    when they exist and were built from the deliveries loaded now; otherwise (None) every mart of
    the month is rebuilt. Both refusals come before Spark is used."""
    from crm_pipeline.pipeline.monthly import analytics_settings, rescore_months

    jan, feb = date(2026, 1, 1), date(2026, 2, 1)
    _build(lake, [jan, feb], "analyse-1")
    said: list[str] = []
    assert rescore_months(None, lake, [feb], analytics_settings(), said.append) is None  # no gold marts here
    assert said == []
    deliver(lake, [("recharge", date(2026, 2, 20), 9, 0, "recharge/20260220/again")], run="run-2")
    assert rescore_months(None, lake, [feb], analytics_settings(), said.append) is None
    assert said == ["analyse: 2026-02 1 delivery loaded since its last build: every mart is rebuilt"]


def test_crm_run_rebuilds_every_complete_month_when_a_mart_is_missing_or_holds_other_columns(tmp_path):
    """`crm run` leaves a month built from the deliveries loaded now as it is, unless its gold could
    not be what this version writes: a mart not written yet, or written with other columns."""
    from deltalake import write_deltalake

    from crm_pipeline.feeds import table_spec
    from crm_pipeline.pipeline.marts import MART_TABLES
    from crm_pipeline.pipeline.monthly import GOLD_EXTRAS, months_out_of_date

    lake = LakeLayout(str(tmp_path / "lake"))
    complete = [date(2026, 1, 1), date(2026, 2, 1)]

    def write(name: str, columns: list[str]) -> None:
        write_deltalake(lake.gold(name), pa.table({c: pa.array([], pa.string()) for c in columns}), mode="overwrite",
                        schema_mode="overwrite")

    expected = {n: [*table_spec(n).column_names, *(GOLD_EXTRAS if n == "subscriber_month" else ())]
                for n in MART_TABLES}
    for name in MART_TABLES[:-1]:
        write(name, expected[name])
    assert months_out_of_date(lake, complete) == {m: f"gold/{MART_TABLES[-1]} not written yet" for m in complete}
    write(MART_TABLES[-1], [*expected[MART_TABLES[-1]], "a_column_of_another_version"])
    assert months_out_of_date(lake, complete) == {
        m: f"gold/{MART_TABLES[-1]} written by another version of the pipeline" for m in complete}
    write(MART_TABLES[-1], expected[MART_TABLES[-1]][:-1])  # one column less
    assert set(months_out_of_date(lake, complete)) == set(complete)


def test_task_retries_come_from_the_operations_config_and_a_wrong_setting_names_the_file(tmp_path):
    import json

    from crm_pipeline.dag_support import TASK_RETRIES, task_retries

    assert task_retries() == TASK_RETRIES == {"retries": 3, "retry_delay_seconds": 300, "max_retry_delay_seconds": 3600}
    path = tmp_path / "operations.json"
    path.write_text(json.dumps({"tasks": {"retries": 1, "retry_delay_seconds": 2}}))
    assert task_retries(path) == {"retries": 1, "retry_delay_seconds": 2, "max_retry_delay_seconds": 3600}
    path.write_text(json.dumps({"tasks": {"retry_delay": 2}}))
    with pytest.raises(ValueError, match=r"operations.json: tasks has unknown setting\(s\) retry_delay"):
        task_retries(path)
    path.write_text(json.dumps({"tasks": {"retries": -1}}))
    with pytest.raises(ValueError, match="operations.json: tasks.retries must be a whole number from 0, not -1"):
        task_retries(path)
