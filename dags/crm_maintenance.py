"""Lake maintenance, weekly (Sunday 03:00 Asia/Shanghai, before the daily ingest):

- `maintain_silver`: Delta OPTIMIZE (compacts the small files daily appends leave) and VACUUM
  of bronze, silver, the quarantine and the daily rollups, in the pool of their writers, so it never
  runs beside an ingest or rollup;
- `maintain_gold`: the same for the gold marts and the ops tables, in the pool of the monthly
  analytics, then the Data Docs and validation results of runs older than `docs_days` are removed
  and the index of the runs kept is rebuilt.

VACUUM keeps `retain_days` of history (params; at least 7, Delta's own floor): the window in which
an operator can time-travel to or restore an earlier version of a table (docs/runbook.md).
Airflow's own metadata of old runs is cleaned by `airflow db clean` (docs/runbook.md), outside the
workers, which have no access to the metadata database.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from crm_pipeline.dag_support import GOLD_POOL, LAKE, SILVER_POOL, crm_task, default_args

with DAG(
    dag_id="crm_maintenance",
    description="Delta OPTIMIZE and VACUUM, old Data Docs pruned",
    schedule="0 3 * * 0",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    params={"retain_days": 30, "docs_days": 90},
    tags=["crm", "maintenance"],
    default_args=default_args(timedelta(minutes=240)),
    doc_md=__doc__,
) as dag:
    silver, gold = (crm_task(f"maintain_{group}", "maintain", "--lake", LAKE, "--tables", group,
                             "--retain-days", "{{ params.retain_days }}", "--docs-days", "{{ params.docs_days }}",
                             pool=pool)
                    for group, pool in (("silver", SILVER_POOL), ("gold", GOLD_POOL)))
    silver >> gold
