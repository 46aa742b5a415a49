"""The session's Airflow run: the daily and monthly DAGs under `airflow dags test`, on generated data
and a fresh SQLite metadata DB, in local mode. The DAG tests check its wiring and output; the
cluster test runs `crm run` on the same landing zone against a standalone cluster and compares
the warehouse tables with this run's. Registered as a plugin in tests/conftest.py."""

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

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
KEY = "dag-test-key"  # the msisdn HMAC key, from the Airflow connection crm_msisdn_hmac


@pytest.fixture(scope="session")
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
        "AIRFLOW_CONN_CRM_MSISDN_HMAC": json.dumps({"conn_type": "generic", "password": KEY}),
        "CRM_SHUFFLE_PARTITIONS": "2",  # a hundred subscribers: as the in-process test session
    }
    env.pop("CRM_MSISDN_HMAC_KEY", None)
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    return root, env


def dags_test(env, dag_id: str, logical_date: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, logical_date, *args], env=env, capture_output=True,
                          text=True, timeout=900)


def query(root: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(root / "wh" / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="session")
def dag_run(airflow_env):
    """The daily DAG for business date 2026-02-04 (every delivery of the landing zone), then the
    monthly DAG: January is complete and published."""
    root, env = airflow_env
    daily = dags_test(env, "crm_daily_ingest", "2026-02-05")  # business date 2026-02-04
    assert daily.returncode == 0, daily.stdout[-3000:] + daily.stderr[-3000:]
    monthly = dags_test(env, "crm_monthly_analytics", "2026-02-04")
    assert monthly.returncode == 0, monthly.stdout[-3000:] + monthly.stderr[-3000:]
    (root / "dags-test-output.txt").write_text(daily.stdout + daily.stderr + monthly.stdout + monthly.stderr)
    return root, env
