"""Monthly analytics: the gold marts of every complete month, churn models, then publish.

Runs on the 4th (Asia/Shanghai) for the month before: a month is complete once its bill has
landed and the first 3 days of the next month are in (late CDRs). `analyse --require-month`
names that month: if it is not complete yet (a late feed, a late bill) the task fails naming what
it waits for, and is retried with back-off, never passed with nothing built (`crm status` shows
the late deliveries). Every complete month is built, so a month a re-delivery changed is rebuilt
(and recorded in crm_ops.restatements); unchanged months are compared and not rewritten.
Backfill a month with `airflow backfill create` at a logical date in the month after it.
`train` fits the models the newly complete months allow (a no-op when the registry has them);
`rescore` rebuilds the months a new model may now score; `publish` sends every gold month.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

CRM = f"{sys.executable} -m crm_pipeline.cli"
RUN = "--run-id '{{ run_id }}' --dag-id {{ dag.dag_id }} --task-id {{ task.task_id }}"
# The month this run is for: the Shanghai month before the run's logical date.
MONTH = "{{ logical_date.in_timezone('Asia/Shanghai').subtract(months=1).start_of('month').to_date_string() }}"
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
    dag_id="crm_monthly_analytics",
    description="silver + rollups -> gold marts -> churn models -> warehouse",
    schedule="0 8 4 * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["crm", "analytics", "monthly"],
    default_args={"owner": "data-engineering", "retries": 3, "retry_delay": timedelta(minutes=5),
                  "retry_exponential_backoff": True, "max_retry_delay": timedelta(hours=1),
                  "execution_timeout": timedelta(minutes=360), "on_failure_callback": alert_on_failure},
    doc_md=__doc__,
) as dag:
    analyse = BashOperator(
        task_id="analyse",
        bash_command=f"{CRM} analyse --lake '{{{{ var.value.crm_lake }}}}' --require-month {MONTH} {RUN}",
        env=KEY,
        append_env=True,
    )
    train = BashOperator(
        task_id="train",
        bash_command=f"{CRM} train --lake '{{{{ var.value.crm_lake }}}}' {RUN}",
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
    analyse >> train >> rescore >> publish
