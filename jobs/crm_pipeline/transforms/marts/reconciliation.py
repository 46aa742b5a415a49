"""Billed against rated: per month and usage item, the bill's VOICE, SMS and DATA lines against
the charges rated on that month's CDRs, in total and per subscriber.

A difference is a finding, not an error of this pipeline: CDRs quarantined or never delivered
(billed, not rated here), CDRs rated after the bill run (rated, not billed), or a billing
system that rates differently. Operators read it in crm_ops.billing_reconciliation; a share
beyond the gold suite's tolerance raises a warning check.
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

#: bill item -> the daily-usage column holding the rated charge of its CDRs
USAGE_ITEMS = {"VOICE": "voice_charge_fen", "SMS": "sms_charge_fen", "DATA": "data_charge_fen"}


def billing_reconciliation(bills: DataFrame, daily_usage: DataFrame, months: list[date]) -> DataFrame:
    """One row per month and usage item. `bills`: silver bill lines (bill_month_date, subscriber_id,
    item_code, amount_fen); `daily_usage`: the per-subscriber daily rollup (usage_date, charges)."""
    billed = (
        bills.where(F.col("bill_month_date").isin(months) & F.col("item_code").isin(list(USAGE_ITEMS)))
        .groupBy(F.col("bill_month_date").alias("month"), "subscriber_id", F.col("item_code").alias("item"))
        .agg(F.sum("amount_fen").alias("billed"))
    )
    stacked = F.explode(F.array(*[
        F.struct(F.lit(item).alias("item"), F.col(column).alias("charge")) for item, column in USAGE_ITEMS.items()
    ])).alias("usage")
    # summed per subscriber and month first, then stacked: a third of the rows to aggregate
    rated = (
        daily_usage.withColumn("month", F.trunc("usage_date", "month"))
        .where(F.col("month").isin(months))
        .groupBy("month", "subscriber_id").agg(*[F.sum(c).alias(c) for c in USAGE_ITEMS.values()])
        .select("month", "subscriber_id", stacked)
        .select("month", "subscriber_id", F.col("usage.item").alias("item"), F.col("usage.charge").alias("rated"))
    )
    both = billed.join(rated, ["month", "subscriber_id", "item"], "full").select(
        "month", "item", F.coalesce("billed", F.lit(0)).alias("billed"), F.coalesce("rated", F.lit(0)).alias("rated"))
    out = both.groupBy("month", "item").agg(
        F.sum("billed").cast("long").alias("billed_fen"),
        F.sum("rated").cast("long").alias("rated_fen"),
        F.count(F.when((F.col("billed") != 0) | (F.col("rated") != 0), 1)).alias("subscribers"),
        F.count(F.when(F.col("billed") != F.col("rated"), 1)).alias("subscribers_differing"),
    )
    return out.select(
        "month", "item", "billed_fen", "rated_fen",
        (F.col("billed_fen") - F.col("rated_fen")).alias("difference_fen"),
        F.when(F.col("rated_fen") != 0, (F.col("billed_fen") - F.col("rated_fen")) / F.col("rated_fen"))
        .alias("difference_share"),
        "subscribers", "subscribers_differing",
    )
