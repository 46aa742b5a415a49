"""`kpi_month`: month x dimension x dimension value, from subscriber_month rows."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

DIMENSIONS = ("ALL", "city_code", "brand", "payment_type", "plan_id", "value_segment", "network_gen")


def kpi_month(rows: DataFrame) -> DataFrame:
    """Counts, churn, revenue and ARPU per group; every dimension's values add up to ALL.

    A subscriber belongs to the group of its month-end attributes. ARPU divides revenue by the
    average of opening and closing subscribers (NULL when 0); churn_rate = churned / opening.
    Per-subscriber usage is summed over the integer seconds and bytes, so reruns are bit-identical.
    """
    def per(dim: str) -> DataFrame:
        value = F.lit("ALL") if dim == "ALL" else F.coalesce(F.col(dim).cast("string"), F.lit("UNKNOWN"))
        return rows.groupBy("month", F.lit(dim).alias("dimension"), value.alias("dimension_value")).agg(
            F.count(F.lit(1)).alias("active_subscribers"),
            F.sum(F.col("opening").cast("long")).alias("opening_subscribers"),
            F.sum(F.col("closing").cast("long")).alias("closing_subscribers"),
            F.sum(F.col("gross_add").cast("long")).alias("gross_adds"),
            F.sum(F.col("churned_in_month").cast("long")).alias("churned_subscribers"),
            F.sum("revenue_fen").cast("long").alias("revenue_fen"),
            F.sum("voice_sec").alias("_voice_sec"),
            F.sum("data_bytes").alias("_data_bytes"),
        )

    out = reduce(DataFrame.unionByName, [per(d) for d in DIMENSIONS])
    avg_base = (F.col("opening_subscribers") + F.col("closing_subscribers")) / 2
    return out.select(
        "month", "dimension", "dimension_value", "active_subscribers", "opening_subscribers",
        "closing_subscribers", "gross_adds", "churned_subscribers",
        F.when(F.col("opening_subscribers") > 0, F.col("churned_subscribers") / F.col("opening_subscribers"))
        .alias("churn_rate"),
        "revenue_fen",
        F.when(avg_base > 0, F.round(F.col("revenue_fen") / avg_base, 2)).alias("arpu_fen"),
        (F.col("_voice_sec") / 60.0 / F.col("active_subscribers")).alias("voice_mou_per_sub"),
        (F.col("_data_bytes") / 1048576.0 / F.col("active_subscribers")).alias("data_mb_per_sub"),
    )
