"""Each DAG end to end under `airflow dags test`, over generated data, on a fresh SQLite metadata DB:
the session's scenario (tests/dag_run.py: a late feed, a month completed late, a re-delivery, under
a fixed clock), then the training DAG on its lake. The maintenance DAG runs through the Spark
connection against the standalone cluster (tests/integration/test_cluster.py, `make submit-test`)."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from tests.dag_run import (
    FAULTS, KEY, LATE, REDELIVERED, airflow_query, dags_test, fired_faults, query, step_output, task_tries,
)

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def _lake_rows(env, table: str, columns: list[str]) -> list[dict]:
    from crm_pipeline.io import delta_rs
    from crm_pipeline.settings import LakeLayout

    return delta_rs.read(LakeLayout(env["AIRFLOW_VAR_CRM_LAKE"]).ops(table), columns).to_pylist()


def _ingest_runs(env) -> list[str]:
    """The daily ingest's run ids, in the order they ran."""
    rows = _lake_rows(env, "pipeline_runs", ["run_id", "dag_id", "task_id", "started_at"])
    first: dict[str, object] = {}
    for r in rows:
        if (r["dag_id"], r["task_id"]) == ("crm_daily_ingest", "ingest"):
            first[r["run_id"]] = min(first.get(r["run_id"], r["started_at"]), r["started_at"])
    return sorted(first, key=first.get)


def test_a_late_feed_is_alerted_once_skipped_the_other_feeds_load_and_a_rerun_of_the_day_loads_it(dag_run):
    root, env = dag_run
    out = step_output(root, "daily-1")
    assert out.count("ticket 2026-02-03 is late: due 2026-02-04 06:00") == 2  # the sensor's log line and the alert
    assert "ticket 2026-02-03: not delivered by 2026-02-04 08:00 (Asia/Shanghai); the ingest goes on without it" in out
    first, rerun = _ingest_runs(env)
    loaded = {(r["run_id"], r["feed"], r["business_date"]) for r in
              _lake_rows(env, "deliveries", ["run_id", "feed", "business_date", "status"]) if r["status"] == "LOADED"}
    assert (first, "cdr_voice", date(2026, 2, 3)) in loaded and (first, "bill", date(2026, 2, 2)) in loaded
    assert not {(first, feed, day) for feed, day in LATE} & loaded
    assert {(rerun, feed, day) for feed, day in LATE} <= loaded  # the rerun of the day, once they landed
    assert {(first, *REDELIVERED), (rerun, *REDELIVERED)} <= loaded  # delivered, then re-delivered
    output = step_output(root, "daily-1-rerun")
    assert "is late" not in output and "ingest goes on without it" not in output


def test_a_month_completed_late_is_announced_by_the_run_that_completes_it_and_built(dag_run):
    root, env = dag_run
    assert "no month is newly complete or built from replaced deliveries" in step_output(root, "daily-1")
    events = [(run, json.loads(extra)) for run, extra in airflow_query(
        root, "SELECT source_run_id, extra FROM asset_event ORDER BY id")]
    assert [extra for _, extra in events] == [{"months": ["2026-01-01"], "why": {"2026-01-01": "complete, not built yet"}}]
    rerun = _ingest_runs(env)[1]
    assert events[0][0] == rerun  # the Airflow run id is the run id on record in crm_ops
    analyses = [r["message"] for r in _lake_rows(env, "pipeline_runs", ["dag_id", "task_id", "message"])
                if (r["dag_id"], r["task_id"]) == ("crm_monthly_analytics", "analyse")]
    assert analyses == ["built 2026-01"]
    assert query(root, 'SELECT DISTINCT month FROM "crm"."subscriber_month" ORDER BY 1') == [(date(2026, 1, 1),)]


def test_lineage_names_the_deliveries_and_files_a_published_month_came_from(dag_run):
    from crm_pipeline.ingest.landing import discover

    root, env = dag_run
    feed, day = REDELIVERED
    (redelivery,) = discover(env["AIRFLOW_VAR_CRM_LANDING"], [feed], day, day)
    rows = query(root, "SELECT feed, business_date, delivery_id, source_file, rows_loaded, gold_version "
                       'FROM "crm_ops"."published_inputs" '
                       "WHERE table_name = 'subscriber_month' AND month = DATE '2026-01-01'")
    recharge = {(r[2], r[3]) for r in rows if (r[0], r[1]) == (feed, day)}
    assert recharge == {(redelivery.delivery_id, f"{feed}/{day:%Y%m%d}/{feed.upper()}_{day:%Y%m%d}_001.dat")}
    days = {(r[0], r[1]) for r in rows}
    assert ("ticket", date(2026, 2, 3)) in days and ("bill", date(2026, 2, 2)) in days  # late window, the bill
    assert ("cdr_voice", date(2026, 2, 4)) not in days
    assert all(r[5] is not None and r[4] is not None for r in rows)


def test_each_killed_task_was_retried_by_airflow_and_finished(dag_run):
    """Every fault point killed one try of its task (tests/dag_run.py): the first ingest's first
    three, the rerun's rollup's, the analyse's and the publish's first. Airflow has each killed try
    on record as failed, and retried the task until it succeeded. (What the tries left behind:
    tests/integration/test_cluster.py compares every table with an uninterrupted run's.)"""
    root, _ = dag_run
    assert fired_faults(root) == FAULTS == ["bronze:1", "gold:1", "publish:2", "rollup", "silver:1", "verify"]
    killed = {("crm_daily_ingest", "ingest"): 3, ("crm_daily_ingest", "rollup"): 1,
              ("crm_monthly_analytics", "analyse"): 1, ("crm_monthly_analytics", "publish"): 1}
    earlier, last = task_tries(root)
    failed = Counter((dag, task) for dag, _, task, _, state in earlier if state == "failed")
    assert dict(failed) == killed
    run_of = {(dag, task): run for dag, run, task, _, state in earlier if state == "failed"}
    assert {key: last[(key[0], run_of[key], key[1])] for key in killed} == {
        key: (n + 1, "success") for key, n in killed.items()}


def test_every_task_of_the_scenario_is_on_record(dag_run):
    root, _ = dag_run
    tasks = set(query(root, 'SELECT DISTINCT dag_id, task_id FROM "crm_ops"."pipeline_runs"'))
    assert {("crm_daily_ingest", "ingest"), ("crm_daily_ingest", "rollup"), ("crm_monthly_analytics", "analyse"),
            ("crm_monthly_analytics", "train"), ("crm_monthly_analytics", "rescore")} <= tasks


def test_monthly_dag_trains_nothing_without_labelled_months_and_says_so(dag_run):
    root, _ = dag_run
    runs = dict(query(root, 'SELECT task_id, max(message) FROM "crm_ops"."pipeline_runs" '
                            "WHERE dag_id = 'crm_monthly_analytics' GROUP BY 1"))
    assert runs["train"] == "trained 0 churn model(s)"
    assert runs["rescore"] == "nothing to rescore"
    scored = query(root, 'SELECT count(churn_score), count(*) FROM "crm"."subscriber_month"')
    assert scored[0][0] == 0 and scored[0][1] > 0
    lost = query(root, 'SELECT count(*) FROM "crm"."lost_customers"')
    churned = query(root, 'SELECT count(*) FROM "crm"."subscriber_month" WHERE churned_in_month')
    assert lost == churned


def test_training_dag_runs_train_rescore_publish(dag_run):
    root, env = dag_run
    run = dags_test(env, "crm_churn_training", "2026-02-05", "--conf", json.dumps({"retrain": True}))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tasks = dict(query(root, 'SELECT task_id, max(message) FROM "crm_ops"."pipeline_runs" '
                             "WHERE dag_id = 'crm_churn_training' GROUP BY 1"))
    assert tasks.pop("publish").startswith("published 2026-01..2026-01: ")
    assert tasks == {"train": "trained 0 churn model(s)", "rescore": "nothing to rescore"}


def test_dag_runs_output_and_task_logs_hold_no_personal_data_nor_the_hmac_secret(dag_run):
    from tests.integration.pii import planted

    root, env = dag_run
    files = [*sorted((root / "steps").glob("*.txt")), *(p for p in (root / "home" / "logs").rglob("*") if p.is_file())]
    text = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    assert "data quality (run " in text[0]  # the tasks' own output is in what was scanned
    pii = planted(Path(env["AIRFLOW_VAR_CRM_LANDING"]), KEY)
    assert len(pii.numbers) > 100
    assert not pii.scan(text)
