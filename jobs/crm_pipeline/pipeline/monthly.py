"""Monthly analytics: which months are complete, and gold subscriber_month / kpi_month for them."""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline import ops
from crm_pipeline.feeds import load_feeds
from crm_pipeline.io import delta
from crm_pipeline.pipeline.tables import silver
from crm_pipeline.quality import gx
from crm_pipeline.settings import LakeLayout
from crm_pipeline.transforms.marts.kpi_month import kpi_month
from crm_pipeline.transforms.marts.subscriber_month import (
    month_frame,
    monthly_revenue,
    monthly_usage,
    subscriber_month,
    subscriber_month_base,
    with_arpu_3m,
)
from crm_pipeline.transforms.marts.value import ValueSettings, with_value_segments

LATE_DAYS = 3


def value_settings() -> ValueSettings:
    """Value-segment parameters from the versioned analytics config."""
    from crm_pipeline.settings import load_analytics_config

    raw = load_analytics_config()["value_segments"]
    return ValueSettings(**{k: v for k, v in raw.items() if k != "description"})


def month_days(m: date) -> list[date]:
    return [m + timedelta(days=i) for i in range(calendar.monthrange(m.year, m.month)[1])]


def next_month(m: date) -> date:
    return (m.replace(day=28) + timedelta(days=4)).replace(day=1)


def complete_months(loaded_days: dict[str, set[date]], bill_months: set[date]) -> list[date]:
    """Months whose bill has landed and whose daily feeds have every day of M and 3 days of M+1."""
    daily = [s.feed for s in load_feeds().values() if s.is_daily]
    all_days = set().union(*[loaded_days.get(f, set()) for f in daily]) if daily else set()
    if not all_days:
        return []
    out = []
    m = min(all_days).replace(day=1)
    while m <= max(all_days):
        needed = month_days(m) + [next_month(m) + timedelta(days=i) for i in range(LATE_DAYS)]
        if m in bill_months and all(set(needed) <= loaded_days.get(f, set()) for f in daily):
            out.append(m)
        m = next_month(m)
    return out


def loaded_days(spark: SparkSession, lake: LakeLayout) -> dict[str, set[date]]:
    out: dict[str, set[date]] = {}
    for (feed, day) in ops.loaded_deliveries(spark, lake):
        out.setdefault(feed, set()).add(day)
    return out


def build_months(
    spark: SparkSession,
    lake: LakeLayout,
    ctx: ops.RunContext,
    months: list[date],
    value: ValueSettings,
    hmac_key: str,
) -> tuple[DataFrame, DataFrame]:
    """Compute subscriber_month and kpi_month rows for `months` from silver and gold rollups.

    History for arpu_3m comes from gold for months before the batch; months inside it from the batch.
    """
    lo = min(months) - timedelta(days=1)
    hi = max(month_days(max(months)))
    snaps = silver(spark, lake, "subscriber").where(F.col("snapshot_date").between(lo, hi))
    snapshot_days = {r[0] for r in snaps.select("snapshot_date").distinct().collect()}
    base = subscriber_month_base(snaps, month_frame(spark, months, snapshot_days))
    usage = delta.read(spark, lake.gold("daily_usage_by_subscriber"))
    if usage is None:
        raise RuntimeError("gold daily rollups are missing: run the rollup step first")
    usage = monthly_usage(usage.where(F.col("usage_date").between(min(months), hi)))
    revenue = monthly_revenue(silver(spark, lake, "bill").where(F.col("bill_month").isin(months)))
    rows = subscriber_month(base, usage, revenue, hmac_key)
    history = delta.read(spark, lake.gold("subscriber_month"))
    if history is None:
        history = rows.limit(0)
    history = history.where(F.col("month").between(min(months) - timedelta(days=62), max(months)))
    rows = with_arpu_3m(rows, history.select("subscriber_id", "month", "revenue_fen"))
    rows = with_value_segments(rows, value)
    return rows, kpi_month(rows)


def consistency_checks(kpi: DataFrame) -> DataFrame:
    """One row per (month, dimension, value) with the gaps that must be 0: the lifecycle identity,
    and each dimension's sums against ALL."""
    identity = kpi.select(
        "month", "dimension", "dimension_value",
        (F.col("opening_subscribers") + F.col("gross_adds") - F.col("churned_subscribers")
         - F.col("closing_subscribers")).alias("identity_gap"),
    )
    measures = ["active_subscribers", "opening_subscribers", "closing_subscribers", "gross_adds",
                "churned_subscribers", "revenue_fen"]
    sums = kpi.groupBy("month", "dimension").agg(*[F.sum(m).alias(m) for m in measures])
    all_ = sums.where("dimension = 'ALL'").select("month", *[F.col(m).alias(f"all_{m}") for m in measures])
    gaps = sums.join(all_, "month").select(
        "month", "dimension", F.lit("*").alias("dimension_value"),
        F.greatest(*[F.abs(F.col(m) - F.col(f"all_{m}")) for m in measures]).alias("sum_gap"),
    )
    return identity.withColumn("sum_gap", F.lit(0).cast("long")).unionByName(
        gaps.withColumn("identity_gap", F.lit(0).cast("long"))
    )


RESTATEMENT_COLUMNS = ("month date, table_name string, run_id string, previous_rows long, new_rows long, "
                       "detected_at timestamp_ntz")


def fingerprints(df: DataFrame) -> dict[date, tuple[int, str | None]]:
    """Per month: row count and an order-independent content hash (restatement detection)."""
    cols = sorted(c for c in df.columns if c != "month")
    got = df.select("month", F.xxhash64(*cols).cast("decimal(38,0)").alias("h")).groupBy("month").agg(
        F.count(F.lit(1)).alias("n"), F.sum("h").alias("s")
    ).collect()
    return {r.month: (int(r.n), str(r.s)) for r in got}


def fingerprint(df: DataFrame) -> tuple[int, str | None]:
    """Row count and an order-independent content hash of a whole table."""
    cols = sorted(df.columns)
    got = df.select(F.xxhash64(*cols).cast("decimal(38,0)").alias("h")).agg(
        F.count(F.lit(1)).alias("n"), F.sum("h").alias("s")
    ).collect()[0]
    return int(got.n), None if got.s is None else str(got.s)


def analyse(
    spark: SparkSession,
    lake: LakeLayout,
    ctx: ops.RunContext,
    value: ValueSettings,
    hmac_key: str,
    months: list[date] | None = None,
    progress: Callable[[str], None] = print,
) -> list[date]:
    """Build gold subscriber_month and kpi_month for every complete month (or the given ones)."""
    bills = silver(spark, lake, "bill").select("bill_month").distinct().collect()
    complete = complete_months(loaded_days(spark, lake), {r[0] for r in bills})
    targets = sorted(set(months) & set(complete)) if months else complete
    skipped = sorted(set(months or []) - set(complete))
    if skipped:
        progress(f"analyse: months not complete, skipped: {', '.join(m.strftime('%Y-%m') for m in skipped)}")
    if not targets:
        progress("analyse: no complete month to build")
        return []
    started = ops.utcnow()
    progress(f"analyse: building {len(targets)} months {targets[0]:%Y-%m} .. {targets[-1]:%Y-%m}")
    # All months in one pass: arpu_3m reads earlier months of the same batch through its window.
    rows, kpi = build_months(spark, lake, ctx, targets, value, hmac_key)
    rows = rows.persist()
    kpi = kpi.persist()
    dq = gx.enforce(rows, "gold_subscriber_month", ctx.run_id, targets[-1])
    dq += gx.enforce(consistency_checks(kpi), "gold_kpi_month", ctx.run_id, targets[-1])
    where = delta.in_predicate("month", targets)
    restated: list[tuple] = []
    for name, new in (("subscriber_month", rows), ("kpi_month", kpi)):
        old = delta.read(spark, lake.gold(name))
        before = fingerprints(old.where(F.col("month").isin(targets))) if old is not None else {}
        after = fingerprints(new)
        for m in targets:
            if before.get(m) and before[m] != after.get(m):
                restated.append((m, name, ctx.run_id, before[m][0], after.get(m, (0, None))[0], ops.utcnow()))
                progress(f"  {m:%Y-%m}: {name} restated ({before[m][0]:,} -> {after.get(m, (0,))[0]:,} rows)")
        delta.replace_where(new, lake.gold(name), where, ["month"])
    counts = dict(rows.groupBy("month").count().collect())
    for m in targets:
        progress(f"  {m:%Y-%m}: {counts.get(m, 0):,} subscriber-months")
    rows.unpersist()
    kpi.unpersist()
    ops.write_data_quality(spark, lake, dq)
    if restated:
        delta.append(spark.createDataFrame(restated, RESTATEMENT_COLUMNS), lake.ops("restatements"))
    ops.write_pipeline_runs(spark, lake, [dict(
        run_id=ctx.run_id, dag_id=ctx.dag_id, task_id=ctx.task_id, feed=None, business_date=targets[-1],
        source_file=None, delivery_id=None, started_at=started, finished_at=ops.utcnow(), status="SUCCESS",
        rows_read=0, rows_loaded=0, rows_quarantined=0, rows_duplicate=0,
        message=f"built {', '.join(m.strftime('%Y-%m') for m in targets)}",
    )])
    return targets
