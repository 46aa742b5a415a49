"""Daily ingest: the BOSS deliveries of yesterday (Asia/Shanghai) -> bronze, silver, rollups; then
the months ready to build are announced to the monthly analytics.

- `wait_<feed>`: one sensor per feed, in reschedule mode (no worker slot held while waiting),
  for that feed's control file. When a delivery falls due (config/operations.json) and is not
  complete it alerts once, waits the feed's `wait_hours`, then is skipped naming what is missing.
  Optional feeds, and the bill except on its due day, are skipped at once.
- `ingest` runs once every sensor is done, whatever their outcome: it loads every complete
  delivery up to the business date, so a delivery that was late (or re-delivered) is loaded by
  the next run, and a failed delivery fails its own feed and day, not the others.
- `rollup` rebuilds the daily rollups of the days that changed.
- `announce_months` emits the Asset `crm_months_ready` (triggering `crm_monthly_analytics`) when
  a month is complete and not built yet, or was built from deliveries since replaced; skipped
  otherwise.

Paths come from the Variables `crm_landing` and `crm_lake`; the msisdn HMAC key from the connection
`crm_msisdn_hmac` (password), resolved at run time. docs/runbook.md: deploy, backfill, rerun.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

from crm_pipeline.dag_support import (
    BUSINESS_DATE, KEY_ENV, LAKE, LANDING, MONTHS_READY, SILVER_POOL, DeliverySensor, announce_months, crm_task,
    default_args, feed_names,
)

with DAG(
    dag_id="crm_daily_ingest",
    description="BOSS deliveries -> bronze -> silver -> daily rollups -> months ready",
    schedule="0 6 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    tags=["crm", "ingest", "daily"],
    default_args=default_args(timedelta(minutes=180)),
    doc_md=__doc__,
) as dag:
    waits = [DeliverySensor(task_id=f"wait_{feed}", feed=feed, business_date=BUSINESS_DATE,
                            landing=LANDING, execution_timeout=timedelta(minutes=10))
             for feed in feed_names()]
    ingest = crm_task("ingest", "ingest", "--landing", LANDING, "--lake", LAKE, "--to", BUSINESS_DATE,
                      trigger_rule="all_done", pool=SILVER_POOL)
    rollup = crm_task("rollup", "rollup", "--lake", LAKE, env=KEY_ENV, pool=SILVER_POOL)
    announce = PythonOperator(
        task_id="announce_months",
        python_callable=announce_months,
        op_kwargs={"lake": LAKE},
        outlets=[MONTHS_READY],
    )
    waits >> ingest >> rollup >> announce
