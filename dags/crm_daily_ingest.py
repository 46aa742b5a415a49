"""Daily ingest: every complete BOSS delivery up to yesterday (Asia/Shanghai) -> bronze, silver, rollups.

Wiring only: each task runs a `crm` entrypoint in its own process (Spark never runs inside the
worker). Paths come from Airflow variables `crm_landing` and `crm_lake`; the msisdn HMAC key
from the connection `crm_msisdn_hmac` (password), resolved at run time, never at parse time.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

CRM = f"{sys.executable} -m crm_pipeline.cli"
# Business date = the Shanghai day before the run's logical date (the day the export covers).
BUSINESS_DATE = "{{ logical_date.in_timezone('Asia/Shanghai').subtract(days=1).to_date_string() }}"
RUN = "--run-id '{{ run_id }}' --dag-id {{ dag.dag_id }} --task-id {{ task.task_id }}"


def alert_on_failure(context) -> None:
    """Every failed try goes through the project's one alert hook (log; webhook or e-mail when
    CRM_ALERT_WEBHOOK / CRM_ALERT_EMAIL are set): imported when a task fails, not at parse time."""
    from crm_pipeline.alerts import task_failed

    task_failed(context)


with DAG(
    dag_id="crm_daily_ingest",
    description="BOSS deliveries -> bronze -> silver -> daily rollups",
    schedule="0 6 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,  # one writer per Delta table
    tags=["crm", "ingest", "daily"],
    default_args={"owner": "data-engineering", "retries": 3, "retry_delay": timedelta(minutes=5),
                  "retry_exponential_backoff": True, "max_retry_delay": timedelta(hours=1),
                  "execution_timeout": timedelta(minutes=180), "on_failure_callback": alert_on_failure},
    doc_md=__doc__,
) as dag:
    ingest = BashOperator(
        task_id="ingest",
        bash_command=f"{CRM} ingest --landing '{{{{ var.value.crm_landing }}}}' --lake '{{{{ var.value.crm_lake }}}}' "
        f"--to {BUSINESS_DATE} {RUN}",
    )
    rollup = BashOperator(
        task_id="rollup",
        bash_command=f"{CRM} rollup --lake '{{{{ var.value.crm_lake }}}}' {RUN}",
        env={"CRM_MSISDN_HMAC_KEY": "{{ conn.crm_msisdn_hmac.password }}"},
        append_env=True,
    )
    ingest >> rollup
