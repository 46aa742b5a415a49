"""Churn model training on its own schedule: refit every window, rescore the months the models
may score, publish.

The monthly analytics already train what newly complete months allow. This DAG refits every
training window on the current features and settings each quarter (the 10th of January, April,
July and October, after the month's analytics), so models follow slow drift and restatements; run
it by hand after a change of features or model settings: `airflow dags trigger crm_churn_training`
(`--conf '{"retrain": false}'` fits only the missing windows).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from crm_pipeline.dag_support import GOLD_POOL, KEY_ENV, LAKE, WAREHOUSE, WAREHOUSE_ENV, crm_task, default_args

with DAG(
    dag_id="crm_churn_training",
    description="gold churn features -> model registry -> rescored marts -> warehouse",
    schedule="0 10 10 1,4,7,10 *",
    start_date=pendulum.datetime(2026, 1, 1, tz="Asia/Shanghai"),
    catchup=False,
    max_active_runs=1,
    params={"retrain": True},
    tags=["crm", "analytics", "churn", "model"],
    default_args=default_args(timedelta(minutes=360)),
    doc_md=__doc__,
) as dag:
    train = crm_task("train", "train", "--lake", LAKE, "--retrain", "{{ 'yes' if params.retrain else 'no' }}",
                     pool=GOLD_POOL)
    rescore = crm_task("rescore", "analyse", "--rescore", "--lake", LAKE, env=KEY_ENV, pool=GOLD_POOL)
    publish = crm_task("publish", "publish", "--lake", LAKE, "--warehouse", WAREHOUSE, env=WAREHOUSE_ENV,
                       pool=GOLD_POOL)
    train >> rescore >> publish
