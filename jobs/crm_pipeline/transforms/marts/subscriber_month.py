"""`subscriber_month`: one row per subscriber active in a month (docs/metrics.md, to the letter)."""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from crm_pipeline.columns import hmac_sha256_hex

ATTRIBUTES = ("msisdn", "customer_id", "account_id", "group_id", "city_code", "brand", "plan_id", "payment_type",
              "network_gen", "birth_year")


def month_frame(spark: SparkSession, months: list[date], snapshot_days: set[date]) -> DataFrame:
    """One row per month to build: its last day and which opening rule applies.

    Opening is read on the last day of the previous month; when no snapshot of that day exists
    (the first month of data), on the first day of the month.
    """
    from calendar import monthrange
    from datetime import timedelta

    rows = []
    for m in months:
        prev_end = m - timedelta(days=1)
        last = m.replace(day=monthrange(m.year, m.month)[1])
        rows.append((m, last, prev_end if prev_end in snapshot_days else m, prev_end in snapshot_days))
    # broadcast: a frame built on the driver has no size Spark can see, and its joins on date
    # ranges would otherwise be planned as cartesian products that read the other side once per
    # partition of this one
    return F.broadcast(spark.createDataFrame(rows, "month date, month_end date, opening_day date, "
                                                   "opening_from_prev boolean"))


def in_reach(rows: DataFrame, months: DataFrame, back: int) -> DataFrame:
    """The rows of `rows` whose `month` lies in M-`back`..M for a month M of `months` (its `month`
    column, a few rows, broadcast): what windows and counts over those months read, and no more."""
    m = F.broadcast(months.select(F.col("month").alias("_m")))
    return rows.join(m, F.col("month").between(F.add_months("_m", -back), F.col("_m")), "left_semi")


def _active(col_status: Column) -> Column:
    return col_status.isin("ACTIVE", "SUSPENDED")


def subscriber_month_base(snapshots: DataFrame, months: DataFrame) -> DataFrame:
    """Lifecycle flags and month-end attributes per subscriber and month.

    Inputs: silver subscriber rows (snapshot_date, subscriber_id, status, status_date,
    activation_date, attributes) covering each month and the day before it; `months` from
    `month_frame`. Grain: subscriber_id x month, only subscribers active in the month.
    """
    snap = snapshots.select("snapshot_date", "subscriber_id", "status", "status_date", "terminate_reason",
                            "activation_date", *ATTRIBUTES)
    in_month = snap.join(
        months, (F.col("snapshot_date") >= F.col("opening_day")) & (F.col("snapshot_date") <= F.col("month_end"))
    ).where((F.col("snapshot_date") >= F.col("month")) | (F.col("snapshot_date") == F.col("opening_day")))
    d, active = F.col("snapshot_date"), _active(F.col("status"))
    # the attributes are those of the latest active day, else of the month's latest day (an inactive
    # row of the opening day has none to give): one pick, so that the aggregation, a sort
    # aggregation (a struct of strings), carries one struct per row through its sorts and shuffle
    pick = F.when(active, 2).when(d >= F.col("month"), 1).otherwise(0)
    attrs = F.when(pick > 0, F.struct(*ATTRIBUTES))
    on_end = d == F.col("month_end")
    opening_cond = active & (d == F.col("opening_day")) & (
        F.col("opening_from_prev") | (F.col("activation_date") < F.col("month"))
    )
    agg = in_month.groupBy("subscriber_id", "month", "month_end").agg(
        F.max(opening_cond).alias("opening"),
        F.max(active & on_end).alias("closing"),
        F.max_by(F.col("activation_date"), d).alias("activation_date"),
        F.max(F.when(on_end, F.col("status"))).alias("status_at_month_end"),
        F.max(F.when(on_end & (F.col("status") == "TERMINATED"), F.col("status_date"))).alias("_terminated_on"),
        F.max(F.when(on_end & (F.col("status") == "TERMINATED"), F.col("terminate_reason"))).alias("terminate_reason"),
        F.max_by(attrs, F.struct(pick, d)).alias("_attrs"),
    )
    gross_add = (F.col("activation_date") >= F.col("month")) & (F.col("activation_date") <= F.col("month_end"))
    churned = F.col("_terminated_on").between(F.col("month"), F.col("month_end"))
    a = F.col("_attrs")
    return (
        agg.withColumn("gross_add", gross_add)
        .withColumn("churned_in_month", F.coalesce(churned, F.lit(False)))
        .where(F.col("opening") | F.col("gross_add"))
        .select(
            "month", "subscriber_id", *[a.getField(c).alias(c) for c in ATTRIBUTES], "activation_date",
            (12 * (F.year("month") - F.year("activation_date")) + F.month("month") - F.month("activation_date"))
            .alias("tenure_months"),
            "status_at_month_end", "terminate_reason", "opening", "closing", "gross_add", "churned_in_month",
        )
    )


def monthly_usage(daily_usage: DataFrame) -> DataFrame:
    """Daily rollups -> per subscriber and month (integer sums; no raw CDRs)."""
    measures = [c for c in daily_usage.columns if c not in ("subscriber_id", "usage_date")]
    return daily_usage.groupBy("subscriber_id", F.trunc("usage_date", "month").alias("month")).agg(
        *[F.sum(m).alias(m) for m in measures]
    )


def monthly_revenue(bills: DataFrame) -> DataFrame:
    """Silver bill lines (each bill month from its latest delivery) -> revenue per subscriber and month."""
    return bills.groupBy("subscriber_id", F.col("bill_month").alias("month")).agg(
        F.sum("amount_fen").cast("long").alias("revenue_fen")
    )


def subscriber_month(base: DataFrame, usage: DataFrame, revenue: DataFrame, hmac_key: str) -> DataFrame:
    """Add usage and revenue measures and the keyed msisdn hash; drop the raw msisdn.

    Grain: month x subscriber_id. Units: fen, minutes, MB (1 MB = 1,048,576 bytes).
    arpu_3m_fen and the other trailing statistics come from `with_trailing_windows`.
    """
    zero = F.lit(0).cast("long")
    u = usage.select(
        "subscriber_id", "month", "voice_sec", "sms_count", "data_bytes", "recharge_fen", "complaints",
        "voice_offnet_sec", "data_5g_bytes", "tickets", "recharge_count",
    )
    out = base.join(u, ["subscriber_id", "month"], "left").join(revenue, ["subscriber_id", "month"], "left")
    return out.select(
        "month", "subscriber_id",
        hmac_sha256_hex(F.col("msisdn"), hmac_key).alias("msisdn_key"),
        *[c for c in ATTRIBUTES if c != "msisdn"],
        "tenure_months", "status_at_month_end", "terminate_reason",
        F.coalesce("revenue_fen", zero).alias("revenue_fen"),
        (F.coalesce("voice_sec", zero) / 60.0).alias("voice_mou"),
        F.coalesce("sms_count", zero).alias("sms_count"),
        (F.coalesce("data_bytes", zero) / 1048576.0).alias("data_mb"),
        F.coalesce("recharge_fen", zero).alias("recharge_fen"),
        F.coalesce("recharge_count", zero).alias("recharge_count"),
        F.coalesce("complaints", zero).alias("complaint_count"),
        F.coalesce("tickets", zero).alias("ticket_count"),
        (F.coalesce("voice_offnet_sec", zero) / 60.0).alias("offnet_voice_mou"),
        (F.coalesce("data_5g_bytes", zero) / 1048576.0).alias("data_5g_mb"),
        "churned_in_month", "opening", "closing", "gross_add", "activation_date",
        F.coalesce("voice_sec", zero).alias("voice_sec"),
        F.coalesce("data_bytes", zero).alias("data_bytes"),
    )


#: Columns of earlier months that the trailing windows below read from gold subscriber_month.
HISTORY_COLUMNS = ("subscriber_id", "month", "revenue_fen", "margin_fen", "data_mb", "recharge_count")


def with_trailing_windows(rows: DataFrame, history: DataFrame) -> DataFrame:
    """Per subscriber and month, statistics over the subscriber's own earlier rows.

    - arpu_3m_fen, margin_3m_fen: mean revenue_fen / margin_fen over the rows in M-2..M
      (months without a row do not count), rounded to 2 decimals;
    - data_mb_3m: mean data_mb over the rows in M-2..M;
    - revenue_prior_fen, data_mb_prior: mean over the rows in M-3..M-1, NULL without one;
    - rows_3m, recharge_months_3m: rows in M-2..M, and of those with at least one RECHARGE.

    `history` holds HISTORY_COLUMNS of earlier published months; rows of a month present in
    `rows` take precedence.
    """
    current = rows.select(*HISTORY_COLUMNS)
    months = current.select("month").distinct()
    # of the earlier months, those the windows of `rows`' months reach (M-3..M): the windows then sort
    # those instead of every month at hand (gold keeps 13 before the batch)
    older = in_reach(history.select(*HISTORY_COLUMNS).join(months, "month", "left_anti"), months, 3)
    both = current.unionByName(older)
    by_sub = Window.partitionBy("subscriber_id").orderBy(F.year("month") * 12 + F.month("month"))
    last3, prior3 = by_sub.rangeBetween(-2, 0), by_sub.rangeBetween(-3, -1)
    stats = both.select(
        "subscriber_id", "month",
        F.round(F.avg("revenue_fen").over(last3), 2).alias("arpu_3m_fen"),
        # exact cents: the mean of 2-decimal margins can end in a half cent that a double misses
        F.round(F.avg(F.col("margin_fen").cast("decimal(20,2)")).over(last3), 2).cast("double").alias("margin_3m_fen"),
        F.avg("revenue_fen").over(prior3).alias("revenue_prior_fen"),
        F.avg("data_mb").over(prior3).alias("data_mb_prior"),
        F.avg("data_mb").over(last3).alias("data_mb_3m"),
        F.count(F.lit(1)).over(last3).alias("rows_3m"),
        F.count(F.when(F.col("recharge_count") > 0, 1)).over(last3).alias("recharge_months_3m"),
    )
    return rows.join(stats, ["subscriber_id", "month"], "left")
