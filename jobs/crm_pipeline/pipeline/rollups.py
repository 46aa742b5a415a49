"""Gold daily rollups, rebuilt for exactly the days whose silver partitions changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from crm_pipeline import ops
from crm_pipeline.io import delta
from crm_pipeline.pipeline.tables import silver
from crm_pipeline.settings import LakeLayout
from crm_pipeline.transforms.intermediate.daily_rollups import daily_contacts, daily_usage_by_subscriber

EVENT_FEEDS = ("cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket")


def pending_days(spark: SparkSession, lake: LakeLayout) -> tuple[list[date], object]:
    """Days with silver changes not rolled up yet, and the change watermark to record after."""
    changes = delta.read(spark, lake.ops("silver_changes"))
    if changes is None:
        return [], None
    changes = changes.where(F.col("feed").isin(*EVENT_FEEDS))
    done = delta.read(spark, lake.ops("rollup_watermark"))
    if done is not None:
        mark = done.agg(F.max("changed_through")).collect()[0][0]
        if mark is not None:
            changes = changes.where(F.col("changed_at") > F.lit(mark))
    got = changes.agg(F.collect_set("partition_date").alias("days"), F.max("changed_at").alias("mark")).collect()[0]
    return sorted(got.days or []), got.mark


def build_daily_rollups(
    spark: SparkSession, lake: LakeLayout, ctx: ops.RunContext, hmac_key: str,
    progress: Callable[[str], None] = print,
) -> list[date]:
    """Rebuild `gold/daily_usage_by_subscriber` and `gold/daily_contacts` for changed days."""
    days, mark = pending_days(spark, lake)
    if not days:
        progress("rollups: no changed days")
        return []
    started = ops.utcnow()
    events = {feed: silver(spark, lake, feed).where(F.col("event_date").isin(days)) for feed in EVENT_FEEDS}
    usage = daily_usage_by_subscriber(*(events[f] for f in EVENT_FEEDS))
    where = delta.in_predicate("usage_date", days)
    delta.replace_where(usage, lake.gold("daily_usage_by_subscriber"), where, ["usage_date"])
    contacts = daily_contacts(events["cdr_voice"], events["cdr_sms"], hmac_key)
    delta.replace_where(contacts, lake.gold("daily_contacts"), where, ["usage_date"])
    wm = spark.createDataFrame([(mark, ctx.run_id, ops.utcnow())],
                               "changed_through timestamp_ntz, run_id string, rolled_at timestamp_ntz")
    delta.append(wm, lake.ops("rollup_watermark"))
    ops.record_step(spark, lake, ctx, started, f"rebuilt {len(days)} days {days[0]}..{days[-1]}", max(days))
    progress(f"rollups: rebuilt {len(days)} days ({days[0]} .. {days[-1]})")
    return days
