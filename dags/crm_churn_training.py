"""Churn model training on demand: fit the models, rescore the months they may score, publish.

The monthly DAG already trains what newly complete months allow. Trigger this one by hand (or
from another DAG) to retrain every window after a change of features or model settings, or after
restated months: `airflow dags trigger crm_churn_training --conf '{"retrain": true}'`.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

CRM = f"{sys.executable} -m crm_pipeline.cli"
RUN = "--run-id '{{ run_id }}' --dag-id {{ dag.dag_id }} --task-id {{ task.task_id }}"
KEY = {"CRM_MSISDN_HMAC_KEY": "{{ conn.crm_msisdn_hmac.password }}"}
# The warehouse: the connection `crm_warehouse` when there is one (PostgreSQL: login, host, port,
# schema = database; its password reaches libpq as PGPASSWORD, masked in logs), else the
# Variable `crm_warehouse` (a URL, e.g. the embedded duckdb:///... file).
WAREHOUSE = ("{% set c = conn.get('crm_warehouse') %}{{ 'postgresql://%s@%s:%s/%s' % "
             "(c.login, c.host, c.port or 5432, c.schema) if c else var.value.crm_warehouse }}")
WAREHOUSE_PASSWORD = {"PGPASSWORD": "{% set c = conn.get('crm_warehouse') %}{{ c.password or '' if c else '' }}"}


def alert_on_failure(context) -> None:
    """Every failed try goes through the project's one alert hook (log; webhook or e-mail when
    CRM_ALERT_WEBHOOK / CRM_ALERT_EMAIL are set): imported when a task fails, not at parse time."""
    from crm_pipeline.alerts import task_failed

    task_failed(context)


with DAG(
    dag_id="crm_churn_training",
    description="gold churn features -> model registry -> rescored marts -> warehouse",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    params={"retrain": False},
    tags=["crm", "analytics", "churn", "model"],
    default_args={"owner": "data-engineering", "retries": 3, "retry_delay": timedelta(minutes=5),
                  "retry_exponential_backoff": True, "max_retry_delay": timedelta(hours=1),
                  "execution_timeout": timedelta(minutes=360), "on_failure_callback": alert_on_failure},
    doc_md=__doc__,
) as dag:
    train = BashOperator(
        task_id="train",
        bash_command=f"{CRM} train --lake '{{{{ var.value.crm_lake }}}}' "
        "{{ '--retrain' if (dag_run.conf or {}).get('retrain', params.retrain) else '' }} " + RUN,
    )
    rescore = BashOperator(
        task_id="rescore",
        bash_command=f"{CRM} analyse --rescore --lake '{{{{ var.value.crm_lake }}}}' {RUN}",
        env=KEY,
        append_env=True,
    )
    publish = BashOperator(
        task_id="publish",
        bash_command=f"{CRM} publish --lake '{{{{ var.value.crm_lake }}}}' --warehouse '{WAREHOUSE}' {RUN}",
        env=WAREHOUSE_PASSWORD,
        append_env=True,
    )
    train >> rescore >> publish
