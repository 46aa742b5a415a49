"""Run bookkeeping: run ids, the per-file accounting rows (crm_ops.pipeline_runs) and the delivery log."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timezone

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline.feeds import table_spec
from crm_pipeline.io import delta
from crm_pipeline.settings import LakeLayout


def new_run_id(prefix: str = "crm") -> str:
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class RunContext:
    """Who is running: the run id, and the Airflow DAG/task (or `cli`)."""

    run_id: str
    dag_id: str = "cli"
    task_id: str = "ingest"


def _append_rows(spark: SparkSession, lake: LakeLayout, table: str, rows: list[dict]) -> None:
    """Append rows to an ops table whose schema is `schemas/tables/<table>.json`."""
    if not rows:
        return
    spec = table_spec(table)
    df = spark.createDataFrame([tuple(r.get(c) for c in spec.column_names) for r in rows], spec.spark_schema())
    delta.append(df, lake.ops(table))


def write_pipeline_runs(spark: SparkSession, lake: LakeLayout, rows: list[dict]) -> None:
    """Append this run's accounting rows (ops history grows by one run's rows per run)."""
    _append_rows(spark, lake, "pipeline_runs", rows)


def record_step(spark: SparkSession, lake: LakeLayout, ctx: RunContext, started: datetime,
                message: str, business_date: date | None = None) -> None:
    """Append the one crm_ops.pipeline_runs row of a successful step that reads no delivery file
    (rollups, analyse, train): no feed or file, zero record counts, what it did in `message`."""
    write_pipeline_runs(spark, lake, [dict(
        run_id=ctx.run_id, dag_id=ctx.dag_id, task_id=ctx.task_id, feed=None, business_date=business_date,
        source_file=None, delivery_id=None, started_at=started, finished_at=utcnow(), status="SUCCESS",
        rows_read=0, rows_loaded=0, rows_quarantined=0, rows_duplicate=0, message=message,
    )])


DELIVERY_LOG_COLUMNS = "feed string, business_date date, delivery_id string, run_id string, status string, logged_at timestamp_ntz"


def loaded_deliveries(spark: SparkSession, lake: LakeLayout) -> dict[tuple[str, date], str]:
    """(feed, business date) -> delivery id currently loaded in bronze."""
    log = delta.read(spark, lake.ops("deliveries"))
    if log is None:
        return {}
    latest = (
        log.where(F.col("status") == "LOADED")
        .groupBy("feed", "business_date")
        .agg(F.max_by("delivery_id", "logged_at").alias("delivery_id"))
        .collect()
    )
    return {(r.feed, r.business_date): r.delivery_id for r in latest}


def log_deliveries(spark: SparkSession, lake: LakeLayout, rows: list[tuple[str, date, str, str, str]]) -> None:
    """Record (feed, business_date, delivery_id, run_id, status) for deliveries this run handled."""
    if not rows:
        return
    now = utcnow()
    df = spark.createDataFrame([(*r, now) for r in rows], DELIVERY_LOG_COLUMNS)
    delta.append(df, lake.ops("deliveries"))


def write_data_quality(spark: SparkSession, lake: LakeLayout, rows: list[dict]) -> None:
    """Append this run's data-quality results."""
    _append_rows(spark, lake, "data_quality", rows)


def log_silver_changes(spark: SparkSession, lake: LakeLayout, run_id: str, changed: dict[str, set[date]]) -> None:
    """Record which silver partitions a run rewrote, so rollups recompute exactly those days."""
    rows = [(feed, day, run_id) for feed, days in sorted(changed.items()) for day in sorted(days)]
    if not rows:
        return
    now = utcnow()
    df = spark.createDataFrame([(*r, now) for r in rows],
                               "feed string, partition_date date, run_id string, changed_at timestamp_ntz")
    delta.append(df, lake.ops("silver_changes"))
