"""Monthly analytics: the gold marts of the months ready to build, churn models, then publish.

Triggered by data, not the calendar: the daily ingest emits the Asset `crm_months_ready` once a
month is complete (its bill has landed and every daily feed has every day of the month and the
first 3 days of the next, for late CDRs), or when a month already built was built from
deliveries since replaced (a re-delivery, a corrected bill).

- `months` picks the months: `params.months` when given (a manual run or a backfill:
  `airflow dags trigger crm_monthly_analytics --conf '{"months": ["2026-03"]}'`), else the months
  ready now, with every later complete month when an earlier one is rebuilt (trailing windows read
  it). Nothing to build: the run is skipped.
- `analyse` builds exactly those months (`crm analyse --month ...`; one that is not complete
  fails the task naming what it waits for, and is retried with back-off); unchanged months are
  compared and not rewritten, changed ones recorded in crm_ops.restatements.
- `train` fits the churn models the newly complete months allow (a no-op when the registry has
  them); `rescore` rebuilds the months a new model may now score; `publish` sends gold to the
  warehouse with crm_ops (lineage: crm_ops.published_inputs).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param

from crm_pipeline.dag_support import (
    GOLD_POOL, KEY_ENV, LAKE, MONTHS_READY, WAREHOUSE, WAREHOUSE_ENV, crm_task, default_args, months_of_run,
)

with DAG(
    dag_id="crm_monthly_analytics",
    description="months ready -> gold marts -> churn models -> warehouse",
    schedule=[MONTHS_READY],
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    params={"months": Param([], type="array", description="months to build (YYYY-MM); empty: the months ready")},
    tags=["crm", "analytics", "monthly"],
    default_args=default_args(timedelta(minutes=360)),
    doc_md=__doc__,
) as dag:
    months = PythonOperator(task_id="months", python_callable=months_of_run, op_kwargs={"lake": LAKE})
    analyse = crm_task("analyse", "analyse", "--lake", LAKE, "--month", "{{ ti.xcom_pull(task_ids='months') }}",
                       env=KEY_ENV, pool=GOLD_POOL)
    train = crm_task("train", "train", "--lake", LAKE, pool=GOLD_POOL)
    rescore = crm_task("rescore", "analyse", "--rescore", "--lake", LAKE, env=KEY_ENV, pool=GOLD_POOL)
    publish = crm_task("publish", "publish", "--lake", LAKE, "--warehouse", WAREHOUSE, env=WAREHOUSE_ENV,
                       pool=GOLD_POOL)
    months >> analyse >> train >> rescore >> publish
