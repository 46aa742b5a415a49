"""Each DAG end to end under `airflow dags test`, over generated data, on a fresh SQLite metadata DB
(the session's `dag_run`, tests/dag_run.py)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from tests.dag_run import KEY, dags_test, query

pytestmark = [pytest.mark.spark, pytest.mark.integration]


def test_daily_then_monthly_dag_publish_every_complete_month(dag_run):
    root, _ = dag_run
    months = query(root, 'SELECT DISTINCT month FROM "crm"."subscriber_month" ORDER BY 1')
    tasks = set(query(root, 'SELECT DISTINCT dag_id, task_id FROM "crm_ops"."pipeline_runs"'))
    assert months == [(date(2026, 1, 1),)]
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
    files = [root / "dags-test-output.txt", *(p for p in (root / "home" / "logs").rglob("*") if p.is_file())]
    text = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    assert "data quality (run " in text[0]  # the tasks' own output is in what was scanned
    pii = planted(Path(env["AIRFLOW_VAR_CRM_LANDING"]), KEY)
    assert len(pii.numbers) > 100
    assert not pii.scan(text)
