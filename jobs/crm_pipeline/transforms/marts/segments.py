"""`segment_summary` and `segment_migration`: the four value segments per month, and who moved."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crm_pipeline.transforms.marts.value import SEGMENTS


def segment_summary(rows: DataFrame, strategies: dict[str, str]) -> DataFrame:
    """Grain: month x value_segment, all four segments every month (zeros when empty).

    ARPU divides revenue by the mean of the segment's opening and closing subscribers (NULL
    when 0); revenue_share is of the month's revenue (NULL when it is 0); revenue_growth is
    sum(revenue in M) / sum(prior revenue) - 1 over the members that have a prior (NULL
    without; the prior revenues, 3-month means, summed exactly at 6 decimals); avg_churn_score is
    the mean churn_score of the segment's scored subscribers (those active at month end in a month
    a model scores; NULL otherwise), 6 decimals. The mean value indices are exact means of the
    2-decimal indices, rounded half up to 6 decimals: a sum of doubles would change in its last
    bits with the order Spark adds the rows in, and a rebuilt month would then count as restated
    though nothing in it changed.
    """
    spark = rows.sparkSession
    grid = rows.select("month").distinct().crossJoin(
        spark.createDataFrame([(s, strategies.get(s)) for s in SEGMENTS], "value_segment string, recommended_strategy string")
    )
    has_prior = F.col("revenue_prior_fen").isNotNull()
    agg = rows.groupBy("month", "value_segment").agg(
        F.count(F.lit(1)).alias("subscribers"),
        F.sum("revenue_fen").alias("revenue_fen"),
        F.sum(F.col("opening").cast("long")).alias("_opening"),
        F.sum(F.col("closing").cast("long")).alias("_closing"),
        _exact_mean("current_value_index").alias("avg_current_value_index"),
        _exact_mean("potential_value_index").alias("avg_potential_value_index"),
        F.avg("clv_fen").alias("avg_clv_fen"),
        F.avg("churn_score").alias("avg_churn_score"),
        F.sum(F.when(has_prior, F.col("revenue_fen"))).alias("_growth_now"),
        # exact, so independent of the order Spark adds the rows in (a 3-month mean has thirds)
        F.sum(F.when(has_prior, F.col("revenue_prior_fen").cast("decimal(38,6)"))).alias("_growth_prior"),
    )
    total = rows.groupBy("month").agg(F.sum("revenue_fen").alias("_total"))
    out = grid.join(agg, ["month", "value_segment"], "left").join(total, "month")
    base = (F.coalesce(F.col("_opening"), F.lit(0)) + F.coalesce(F.col("_closing"), F.lit(0))) / 2
    revenue = F.coalesce(F.col("revenue_fen"), F.lit(0)).cast("long")
    return out.select(
        "month", "value_segment",
        F.coalesce(F.col("subscribers"), F.lit(0)).cast("long").alias("subscribers"),
        revenue.alias("revenue_fen"),
        F.when(F.col("_total") != 0, revenue / F.col("_total")).alias("revenue_share"),
        F.when(base > 0, F.round(revenue / base, 2)).alias("arpu_fen"),
        F.round(F.col("avg_churn_score"), 6).alias("avg_churn_score"),
        "recommended_strategy",
        F.col("avg_current_value_index").cast("double").alias("avg_current_value_index"),
        F.col("avg_potential_value_index").cast("double").alias("avg_potential_value_index"),
        F.round("avg_clv_fen", 2).alias("avg_clv_fen"),
        F.when(F.col("_growth_prior") > 0,
               F.col("_growth_now").cast("double") / F.col("_growth_prior").cast("double") - 1).alias("revenue_growth"),
    )


def _exact_mean(column: str):
    """Mean of a 2-decimal column as decimal(,6), HALF_UP: a decimal sum does not depend on row order."""
    return F.avg(F.col(column).cast("decimal(20,2)"))


def segment_migration(rows: DataFrame, previous: DataFrame) -> DataFrame:
    """Grain: month x from_segment x to_segment, with subscribers and their revenue in M.

    from = NEW for a gross add, else the segment of the subscriber's row in M-1 (`previous`:
    subscriber_id, month, value_segment of earlier months), else UNKNOWN; to = CHURNED when the
    subscriber churned in M, else its segment in M. Subscribers add up to the month's rows.
    """
    prev = previous.select(
        "subscriber_id", F.add_months("month", 1).alias("month"), F.col("value_segment").alias("_prev_segment")
    )
    joined = rows.join(prev, ["subscriber_id", "month"], "left")
    src = F.when(F.col("gross_add"), "NEW").otherwise(F.coalesce(F.col("_prev_segment"), F.lit("UNKNOWN")))
    dst = F.when(F.col("churned_in_month"), "CHURNED").otherwise(F.col("value_segment"))
    return joined.groupBy("month", src.alias("from_segment"), dst.alias("to_segment")).agg(
        F.count(F.lit(1)).alias("subscribers"), F.sum("revenue_fen").cast("long").alias("revenue_fen"),
    )
