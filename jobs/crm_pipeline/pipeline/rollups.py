"""Gold daily rollups, rebuilt for exactly the days whose silver partitions changed, and the monthly
summaries derived from them (contact pairs, activity)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline import faults, ops
from crm_pipeline.columns import isin
from crm_pipeline.io import delta, delta_rs
from crm_pipeline.months import month_days
from crm_pipeline.pipeline.tables import silver
from crm_pipeline.quality import gx
from crm_pipeline.settings import LakeLayout
from crm_pipeline.spark import partitions_for
from crm_pipeline.stages import stage
from crm_pipeline.transforms.intermediate.daily_rollups import (
    activity_months,
    contact_months,
    daily_contacts,
    daily_usage_by_subscriber,
)

EVENT_FEEDS = ("cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket")

#: gold monthly summaries of a daily rollup: summary table -> (daily table it is built from, builder,
#: whether its daily rows are hashed by subscriber before the builder aggregates them).
#: A month's summary is built once, when a monthly stage first reads it, and read by every later
#: month whose window spans it; rewriting a day of the daily table drops its month's summary first.
#: The daily contacts are hashed first: a contact's days sit in different files (one day each), so
#: an aggregation inside the reading tasks would reduce nothing and only cost a hash map per task
#: (at 1 M subscribers the build took 187 s with it, 160 s without); a subscriber's daily usage
#: rows, one per day in small files that a task reads together, do reduce there.
MONTH_SUMMARIES = {
    "contact_months": ("daily_contacts", contact_months, True),
    "activity_months": ("daily_usage_by_subscriber", activity_months, False),
}
#: the tables holding contact keys (`other_party_key`) as bytes, and their partition columns;
#: lakes written before 2026-12-07 hold them as hex text (`contact_keys_as_bytes`)
CONTACT_TABLES = {"daily_contacts": "usage_date", "contact_months": "month"}
NOTHING_PENDING = "rollups: no changed days"
#: the daily rollups and their monthly summaries are read by their partition (day, month) alone:
#: their files record only their row counts (`delta.statistics_on`)
STATISTICS = delta.statistics_on([])


def pending_days(lake: LakeLayout, rebuild_from: date | None = None) -> tuple[list[date], object]:
    """Days with silver changes not rolled up yet (with `rebuild_from`, also every silver day from
    that date on), and the change watermark to record after (two small ops tables, read without
    Spark)."""
    import pyarrow.compute as pc

    changes = delta_rs.read(lake.ops("silver_changes"), ["partition_date", "changed_at"],
                            pc.field("feed").isin(list(EVENT_FEEDS)))
    if changes is None:
        return [], None
    every = changes
    done = delta_rs.read(lake.ops("rollup_watermark"), ["changed_through"])
    mark = pc.max(done.column("changed_through")).as_py() if done is not None else None
    if mark is not None:
        changes = changes.filter(pc.greater(changes.column("changed_at"), pa.scalar(mark, pa.timestamp("us"))))
    days = set(changes.column("partition_date").to_pylist())
    if rebuild_from is not None:
        days |= {d for d in every.column("partition_date").to_pylist() if d >= rebuild_from}
    if not days:
        return [], None
    return sorted(days), pc.max(every.column("changed_at")).as_py()


def record_watermark(lake: LakeLayout, mark, run_id: str) -> None:
    """Every silver change up to `mark` is rolled up."""
    schema = pa.schema([("changed_through", pa.timestamp("us")), ("run_id", pa.string()),
                        ("rolled_at", pa.timestamp("us"))])
    delta_rs.append_rows(lake.ops("rollup_watermark"),
                         [dict(changed_through=mark, run_id=run_id, rolled_at=ops.utcnow())], schema)


def build_daily_rollups(
    spark: SparkSession, lake: LakeLayout, ctx: ops.RunContext, hmac_key: str,
    progress: Callable[[str], None] = print, rebuild_from: date | None = None,
) -> list[date]:
    """Rebuild `gold/daily_usage_by_subscriber` and `gold/daily_contacts` for changed days (and
    every day from `rebuild_from`: after an HMAC key rotation, or a change of the rollups)."""
    days, mark = pending_days(lake, rebuild_from)
    if not days:
        progress(NOTHING_PENDING)
        return []
    started = ops.utcnow()
    events = {feed: silver(spark, lake, feed).where(isin("event_date", days)) for feed in EVENT_FEEDS}
    usage = daily_usage_by_subscriber(*(events[f] for f in EVENT_FEEDS))
    replace_daily(spark, lake, "daily_usage_by_subscriber", usage, days)
    faults.point("rollup")
    replace_daily(spark, lake, "daily_contacts", daily_contacts(events["cdr_voice"], events["cdr_sms"], hmac_key), days)
    with stage("validate", "rollup_reconciliation"):
        written = delta.read(spark, lake.gold("daily_usage_by_subscriber")).where(isin("usage_date", days))
        checks = rollup_reconciliation(spark, events, written, days)
        dq = gx.dq_rows(gx.validate(checks, "gold_rollup_reconciliation", {"days": len(days)}, ctx.run_id),
                        "gold_rollup_reconciliation", ctx.run_id, max(days))
    blocking = gx.blocking_error(dq)
    if blocking is not None:  # goes on record with the step; the watermark stays: the days are rebuilt next run
        raise blocking
    ops.write_data_quality(lake, dq)
    record_watermark(lake, mark, ctx.run_id)
    ops.record_step(lake, ctx, started, f"rebuilt {len(days)} days {days[0]}..{days[-1]}", max(days))
    progress(f"rollups: rebuilt {len(days)} days ({days[0]} .. {days[-1]})")
    return days


#: silver event feed -> the measure of daily_usage_by_subscriber that counts its records
COUNTED = {"cdr_voice": "voice_calls", "cdr_sms": "sms_count", "cdr_data": "data_sessions", "ticket": "tickets"}


def rollup_reconciliation(spark: SparkSession, events: dict[str, DataFrame], usage: DataFrame,
                          days: list[date]) -> DataFrame:
    """One row per rebuilt day: for each feed of COUNTED, `<feed>_gap` = |silver records of the day
    - the day's sum of the measure counting them in `usage`| (0 when the rollup holds every record
    once). Silver counts read only Parquet footers and partition paths."""
    out = spark.createDataFrame([(d,) for d in days], "usage_date date")
    sums = usage.groupBy("usage_date").agg(*[F.sum(m).alias(f"_{m}") for m in COUNTED.values()])
    out = out.join(sums, "usage_date", "left")
    gaps = []
    for feed, measure in COUNTED.items():
        counts = events[feed].groupBy(F.col("event_date").alias("usage_date")).agg(F.count(F.lit(1)).alias(f"_{feed}"))
        out = out.join(counts, "usage_date", "left")
        gaps.append(F.abs(F.coalesce(F.col(f"_{feed}"), F.lit(0)) - F.coalesce(F.col(f"_{measure}"), F.lit(0)))
                    .cast("long").alias(f"{feed}_gap"))
    return out.select("usage_date", *gaps)


def contact_keys_as_bytes(spark: SparkSession, lake: LakeLayout, name: str,
                          progress: Callable[[str], None] = print) -> None:
    """Rewrite, once, the contact table `name` (of CONTACT_TABLES) of a lake written before the keys
    were stored as bytes: its `other_party_key` as the bytes of its hex text, its other columns and
    rows as they were, in one transaction. Nothing for a table already in bytes or not there; the
    check reads the Delta log alone. Each table is rewritten by its own writer (the daily contacts
    by the rollup, the monthly pairs by the monthly stage), so no two steps write one table."""
    path = lake.gold(name)
    if delta_rs.column_type(path, "other_party_key") != "string":
        return
    progress(f"rollups: gold/{name} holds its contact keys as hex text (an earlier version's lake): "
             "rewriting them as bytes, once")
    rows = delta.read(spark, path).withColumn("other_party_key", F.unhex("other_party_key"))
    delta.replace_schema(rows, path, [CONTACT_TABLES[name]])


def replace_daily(spark: SparkSession, lake: LakeLayout, table: str, rows: DataFrame, days: list[date]) -> None:
    """Replace `days` of the gold daily table `table` with `rows`, and forget the monthly summaries
    built from it for their months first (rebuilt from the daily rows when next read): a crash
    between the two writes then leaves those summaries missing, never stale."""
    if table in CONTACT_TABLES:
        contact_keys_as_bytes(spark, lake, table)
    months = {d.replace(day=1) for d in days}
    for name, (source, *_) in MONTH_SUMMARIES.items():
        if source == table:
            # from the Delta log, through delta-rs: a Spark DELETE cost about 6 s a table in a fresh JVM
            delta_rs.delete_where(lake.gold(name), delta.in_predicate("month", months))
    delta.replace_where(rows, lake.gold(table), delta.in_predicate("usage_date", days), ["usage_date"],
                        properties=STATISTICS)


def summary_rows(spark: SparkSession, lake: LakeLayout, name: str, months: list[date]) -> DataFrame:
    """The rows of the monthly summary `name` (a key of MONTH_SUMMARIES) for `months`, built from
    its daily table."""
    source, build, hashed_first = MONTH_SUMMARIES[name]
    daily = delta.read(spark, lake.gold(source))
    if daily is None:
        raise RuntimeError("gold daily rollups are missing: run the rollup step first")
    days = [d for m in months for d in month_days(m)]
    rows = daily.where(isin("usage_date", days))
    if dict(rows.dtypes).get("other_party_key") == "string":  # an earlier version's, until a rollup rewrites it
        rows = rows.withColumn("other_party_key", F.unhex("other_party_key"))
    if hashed_first:
        rows = rows.repartition(
            partitions_for(spark, delta_rs.partition_bytes(lake.gold(source), "usage_date", days)), "subscriber_id")
    return build(rows)


def month_summaries(spark: SparkSession, lake: LakeLayout, name: str, months: list[date]) -> DataFrame:
    """The gold monthly summary `name` (a key of MONTH_SUMMARIES) for `months`, built from its daily
    table for the months it lacks.

    `replace_daily` deletes a month's summary whenever it rewrites one of its days, so the stored
    rows always equal what the current daily rows give.
    """
    path = lake.gold(name)
    if name in CONTACT_TABLES:
        contact_keys_as_bytes(spark, lake, name)
    have = delta_rs.partition_values(path, "month") or set()  # from the Delta log, no data read
    missing = sorted(set(months) - have)
    if missing:
        with stage("month_summaries", name):
            # written as the aggregation's tasks hold them (hashed over every task, one month each
            # per task): no second shuffle to bin-pack
            delta.replace_where(summary_rows(spark, lake, name, missing), path, delta.in_predicate("month", missing),
                                ["month"], optimize_write=False, properties=STATISTICS)
        faults.point("gold")  # the month's gold half built: a summary written, its marts not
    return delta.read(spark, path).where(isin("month", months))
