"""Revenue concentration per month: top-20 % share, Gini, and Lorenz curve points (docs/value.md)."""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

TOP_SHARE = 0.2
LORENZ_POINTS = 100


def _ranked(rows: DataFrame) -> DataFrame:
    """Revenue x = max(revenue_fen, 0) ranked ascending within the month (i = 1..n), with running sums."""
    x = F.greatest(F.col("revenue_fen"), F.lit(0)).cast("long")
    by_month = Window.partitionBy("month")
    asc = by_month.orderBy("x", "subscriber_id")
    return rows.select("month", "subscriber_id", x.alias("x")).select(
        "month", "x",
        F.row_number().over(asc).alias("i"),
        F.sum("x").over(asc.rowsBetween(Window.unboundedPreceding, Window.currentRow)).alias("cum_x"),
        F.count(F.lit(1)).over(by_month).alias("n"),
        F.sum("x").over(by_month).alias("total"),
    )


def revenue_concentration(rows: DataFrame) -> DataFrame:
    """Grain: month. top20_revenue_share = the ceil(0.2 n) largest revenues / total; Gini with
    negative revenue counted as 0; both NULL when the month's (clipped) revenue is 0."""
    r = _ranked(rows)
    top_k = F.ceil(F.col("n") * TOP_SHARE)
    agg = r.groupBy("month").agg(
        F.first("n").alias("subscribers"), F.first("total").alias("total"),
        F.sum(F.col("i") * F.col("x")).cast("decimal(38,0)").alias("_ix"),
        F.sum(F.when(F.col("i") > F.col("n") - top_k, F.col("x")).otherwise(0)).alias("_top"),
    )
    return agg.select(
        "month",
        F.when(F.col("total") > 0, F.col("_top") / F.col("total")).alias("top20_revenue_share"),
        F.when(F.col("total") > 0, (2 * F.col("_ix").cast("double")) / (F.col("subscribers") * F.col("total"))
               - (F.col("subscribers") + 1) / F.col("subscribers")).alias("gini"),
        F.col("subscribers").cast("long").alias("subscribers"),
        F.col("total").cast("long").alias("revenue_fen"),
    )


def revenue_lorenz(rows: DataFrame) -> DataFrame:
    """Grain: month x point (0..100). At point p, i = floor(n p / 100) subscribers from the bottom:
    population_share = i / n, revenue_share = their revenue / total (NULL when the total is 0)."""
    r = _ranked(rows)
    spark = rows.sparkSession
    points = spark.range(LORENZ_POINTS + 1).select(F.col("id").cast("int").alias("point"))
    months = r.groupBy("month").agg(F.first("n").alias("n"), F.first("total").alias("total"))
    grid = months.crossJoin(points).withColumn("i", F.floor(F.col("n") * F.col("point") / LORENZ_POINTS))
    got = grid.join(r.select("month", "i", "cum_x"), ["month", "i"], "left")
    return got.select(
        "month", "point",
        (F.col("i") / F.col("n")).alias("population_share"),
        F.when(F.col("total") > 0, F.coalesce(F.col("cum_x"), F.lit(0)) / F.col("total")).alias("revenue_share"),
    )
