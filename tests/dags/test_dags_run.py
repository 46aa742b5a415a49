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


def small_data_config(path: Path) -> Path:
    """The shipped analytics config with the churn model's minimums lowered for a few hundred
    subscribers over five months: one month to train (a handful of churners), one to test (the
    rules stay the same)."""
    raw = json.loads((REPO / "config" / "analytics.json").read_text(encoding="utf-8"))
    raw["churn"].update(min_train_months=1, min_positives=3)
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow")
    landing = root / "landing"
    # January 1st to June 3rd: January..May complete (May's bill lands June 2, late CDRs June 1-3).
    generate(GeneratorConfig(landing=landing, subscribers=300, start=date(2026, 1, 1), days=154, seed=9,
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
        "CRM_ANALYTICS_CONFIG": str(small_data_config(root / "analytics.json")),
        "CRM_SHUFFLE_PARTITIONS": "2",  # a few hundred subscribers: as the in-process test session
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
    daily = _dags_test(env, "crm_daily_ingest", "2026-06-04")  # business date 2026-06-03
    assert daily.returncode == 0, daily.stdout[-3000:] + daily.stderr[-3000:]
    monthly = _dags_test(env, "crm_monthly_analytics", "2026-06-04")
    assert monthly.returncode == 0, monthly.stdout[-3000:] + monthly.stderr[-3000:]
    return root, env


def test_daily_then_monthly_dag_publish_every_complete_month(monthly_run):
    root, _ = monthly_run
    months = _query(root, 'SELECT DISTINCT month FROM "crm"."subscriber_month" ORDER BY 1')
    tasks = set(_query(root, 'SELECT DISTINCT dag_id, task_id FROM "crm_ops"."pipeline_runs"'))
    assert months == [(date(2026, m, 1),) for m in (1, 2, 3, 4, 5)]
    assert {("crm_daily_ingest", "ingest"), ("crm_daily_ingest", "rollup"), ("crm_monthly_analytics", "analyse"),
            ("crm_monthly_analytics", "train"), ("crm_monthly_analytics", "rescore")} <= tasks


def test_monthly_dag_trains_and_scores_only_the_months_a_model_may_score(monthly_run):
    root, _ = monthly_run
    # January trains (its labels end in March), March tests; its labels need April and May: the model
    # may score May on.
    models = _query(root, 'SELECT model_version, train_months, test_month, labels_known_through, auc, '
                          'baseline_auc, top_decile_lift, emp, brier FROM "crm"."churn_model"')
    assert len(models) == 1
    version, train_months, test_month, known, *metrics = models[0]
    assert (train_months, test_month, known) == ("2026-01-01", date(2026, 3, 1), date(2026, 5, 1))
    assert all(m is not None for m in metrics)
    scored = _query(root, 'SELECT month, count(churn_score), count(*) FILTER (WHERE closing), '
                          'count(DISTINCT churn_model_version) FROM "crm"."subscriber_month" GROUP BY 1 ORDER BY 1')
    assert [(m, n) for m, n, _, _ in scored if n] == [(date(2026, 5, 1), scored[-1][2])]  # every closing line
    assert scored[-1][3] == 1
    listed = _query(root, 'SELECT DISTINCT month, churn_model_version FROM "crm"."churn_watchlist"')
    assert listed == [(date(2026, 5, 1), version)]
    drift = _query(root, 'SELECT count(DISTINCT feature) FROM "crm_ops"."model_drift" WHERE month = DATE \'2026-05-01\'')
    assert drift[0][0] > 30
    lost = _query(root, 'SELECT month, count(*) FROM "crm"."lost_customers" GROUP BY 1 ORDER BY 1')
    churned = _query(root, 'SELECT month, count(*) FROM "crm"."subscriber_month" WHERE churned_in_month '
                           'GROUP BY 1 ORDER BY 1')
    assert lost == churned


def test_training_dag_retrains_to_the_same_model_and_leaves_scores_unchanged(monthly_run):
    root, env = monthly_run
    before = _query(root, 'SELECT month, subscriber_id, churn_score FROM "crm"."subscriber_month" '
                          'WHERE churn_score IS NOT NULL ORDER BY 1, 2')
    run = subprocess.run([AIRFLOW, "dags", "test", "crm_churn_training", "2026-06-05", "--conf",
                          json.dumps({"retrain": True})], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    after = _query(root, 'SELECT month, subscriber_id, churn_score FROM "crm"."subscriber_month" '
                         'WHERE churn_score IS NOT NULL ORDER BY 1, 2')
    assert before and after == before
    tasks = dict(_query(root, 'SELECT task_id, max(message) FROM "crm_ops"."pipeline_runs" '
                              "WHERE dag_id = 'crm_churn_training' GROUP BY 1"))
    assert tasks["train"].startswith("trained 1 churn model(s)")  # fitted again: the same version
