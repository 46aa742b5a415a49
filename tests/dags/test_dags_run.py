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
    # 35 days from January 1st: January's bill (Feb 2) and its late-CDR days (Feb 1-3) are in.
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
    }
    env.pop("CRM_MSISDN_HMAC_KEY", None)
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    return root, env


def _dags_test(env, dag_id: str, logical_date: str) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, logical_date], env=env, capture_output=True,
                          text=True, timeout=900)


def test_daily_then_monthly_dag_publish_january(airflow_env):
    root, env = airflow_env
    daily = _dags_test(env, "crm_daily_ingest", "2026-02-05")  # business date 2026-02-04
    assert daily.returncode == 0, daily.stdout[-3000:] + daily.stderr[-3000:]
    monthly = _dags_test(env, "crm_monthly_analytics", "2026-02-04")
    assert monthly.returncode == 0, monthly.stdout[-3000:] + monthly.stderr[-3000:]

    con = duckdb.connect(str(root / "wh" / "warehouse.duckdb"), read_only=True)
    months = con.execute('SELECT DISTINCT month FROM "crm"."subscriber_month"').fetchall()
    tasks = set(con.execute('SELECT DISTINCT dag_id, task_id FROM "crm_ops"."pipeline_runs"').fetchall())
    con.close()
    assert months == [(date(2026, 1, 1),)]
    assert {("crm_daily_ingest", "ingest"), ("crm_daily_ingest", "rollup"),
            ("crm_monthly_analytics", "analyse")} <= tasks
