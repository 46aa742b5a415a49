"""Each DAG end to end under `airflow dags test`, over generated data, on a fresh SQLite metadata DB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from crm_pipeline.generate import GeneratorConfig, generate

pytestmark = [pytest.mark.spark, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow")
    landing = root / "landing"
    # 35 days from January 1st: January's bill (Feb 2) and its late-CDR days (Feb 1-3) are in. Too
    # short for a churn model (tests/unit/test_churn.py covers training and the honest-scoring rule;
    # `crm demo` the whole flow on 8 months): here the DAGs' wiring is what is tested.
    generate(GeneratorConfig(landing=landing, subscribers=120, start=date(2026, 1, 1), days=35, seed=9,
                             progress="none"))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_CRM_LANDING": str(landing),
        "AIRFLOW_VAR_CRM_LAKE": str(root / "lake"),
        "AIRFLOW_VAR_CRM_WAREHOUSE": f"duckdb:///{root / 'wh' / 'warehouse.duckdb'}",
        "AIRFLOW_CONN_CRM_MSISDN_HMAC": json.dumps({"conn_type": "generic", "password": "dag-test-key"}),
        "CRM_SHUFFLE_PARTITIONS": "2",  # a hundred subscribers: as the in-process test session
    }
    env.pop("CRM_MSISDN_HMAC_KEY", None)
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    return root, env


def _dags_test(env, dag_id: str, logical_date: str) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, logical_date], env=env, capture_output=True,
                          text=True, timeout=900)


def _query(root: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(root / "wh" / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def monthly_run(airflow_env):
    root, env = airflow_env
    daily = _dags_test(env, "crm_daily_ingest", "2026-02-05")  # business date 2026-02-04
    assert daily.returncode == 0, daily.stdout[-3000:] + daily.stderr[-3000:]
    monthly = _dags_test(env, "crm_monthly_analytics", "2026-02-04")
    assert monthly.returncode == 0, monthly.stdout[-3000:] + monthly.stderr[-3000:]
    (root / "dags-test-output.txt").write_text(daily.stdout + daily.stderr + monthly.stdout + monthly.stderr)
    return root, env


def test_daily_then_monthly_dag_publish_every_complete_month(monthly_run):
    root, _ = monthly_run
    months = _query(root, 'SELECT DISTINCT month FROM "crm"."subscriber_month" ORDER BY 1')
    tasks = set(_query(root, 'SELECT DISTINCT dag_id, task_id FROM "crm_ops"."pipeline_runs"'))
    assert months == [(date(2026, 1, 1),)]
    assert {("crm_daily_ingest", "ingest"), ("crm_daily_ingest", "rollup"), ("crm_monthly_analytics", "analyse"),
            ("crm_monthly_analytics", "train"), ("crm_monthly_analytics", "rescore")} <= tasks


def test_monthly_dag_trains_nothing_without_labelled_months_and_says_so(monthly_run):
    root, _ = monthly_run
    runs = dict(_query(root, 'SELECT task_id, max(message) FROM "crm_ops"."pipeline_runs" '
                             "WHERE dag_id = 'crm_monthly_analytics' GROUP BY 1"))
    assert runs["train"] == "trained 0 churn model(s)"
    assert runs["rescore"] == "nothing to rescore"
    scored = _query(root, 'SELECT count(churn_score), count(*) FROM "crm"."subscriber_month"')
    assert scored[0][0] == 0 and scored[0][1] > 0
    lost = _query(root, 'SELECT count(*) FROM "crm"."lost_customers"')
    churned = _query(root, 'SELECT count(*) FROM "crm"."subscriber_month" WHERE churned_in_month')
    assert lost == churned


def test_training_dag_runs_train_rescore_publish(monthly_run):
    root, env = monthly_run
    run = subprocess.run([AIRFLOW, "dags", "test", "crm_churn_training", "2026-02-05", "--conf",
                          json.dumps({"retrain": True})], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tasks = dict(_query(root, 'SELECT task_id, max(message) FROM "crm_ops"."pipeline_runs" '
                              "WHERE dag_id = 'crm_churn_training' GROUP BY 1"))
    assert tasks.pop("publish").startswith("published 2026-01..2026-01: ")
    assert tasks == {"train": "trained 0 churn model(s)", "rescore": "nothing to rescore"}


def test_dag_runs_output_and_task_logs_hold_no_personal_data_nor_the_hmac_secret(monthly_run):
    from tests.integration.pii import planted

    root, env = monthly_run
    files = [root / "dags-test-output.txt", *(p for p in (root / "home" / "logs").rglob("*") if p.is_file())]
    text = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    assert "data quality (run " in text[0]  # the tasks' own output is in what was scanned
    pii = planted(Path(env["AIRFLOW_VAR_CRM_LANDING"]), "dag-test-key")
    assert len(pii.numbers) > 100
    assert not pii.scan(text)
