"""`key_account_month`: enterprise groups' lines, revenue, trend, churn, complaints and health."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from crm_pipeline.settings import config_section


@dataclass(frozen=True)
class HealthSettings:
    """The `key_accounts` section of config/analytics.json (docs/value.md, "Key accounts")."""

    churn_penalty_per_pct: float
    churn_penalty_max: float
    decline_penalty_per_pct: float
    decline_penalty_max: float
    complaint_penalty_per_100_lines: float
    complaint_penalty_max: float

    @classmethod
    def from_config(cls, section: dict) -> HealthSettings:
        return cls(**{k: float(v) for k, v in config_section(section).items()})


def key_account_month(rows: DataFrame, history: DataFrame, health: HealthSettings) -> DataFrame:
    """Grain: month x group_id over the lines with a group (month-end attributes).

    `history` (month, group_id, revenue_fen) holds the subscriber rows of every month at hand
    (these and earlier ones), for the group's revenue 3 months before. health_score = 100 minus three capped penalties, each published with
    the sentence that explains it.
    """
    total = rows.groupBy("month").agg(F.sum("revenue_fen").alias("_total"))
    groups = rows.where(F.col("group_id").isNotNull()).groupBy("month", "group_id").agg(
        F.count(F.lit(1)).alias("lines"),
        F.sum(F.col("closing").cast("long")).alias("active_lines"),
        F.sum("revenue_fen").cast("long").alias("revenue_fen"),
        F.sum(F.col("churned_in_month").cast("long")).alias("churned_lines"),
        F.sum("complaint_count").cast("long").alias("complaint_count"),
    )
    earlier = history.where(F.col("group_id").isNotNull()).groupBy(
        F.add_months("month", 3).alias("month"), "group_id").agg(F.sum("revenue_fen").alias("_rev_3m_ago"))
    out = groups.join(total, "month").join(earlier, ["month", "group_id"], "left")
    change = F.when(F.col("_rev_3m_ago") > 0, F.col("revenue_fen") / F.col("_rev_3m_ago") - 1)
    h = health
    churn_pct = 100.0 * F.col("churned_lines") / F.col("lines")
    decline_pct = 100.0 * F.greatest(-F.col("revenue_change_3m"), F.lit(0.0))
    complaints_per_100 = 100.0 * F.col("complaint_count") / F.col("lines")
    out = out.withColumn("revenue_change_3m", change).select(
        "month", "group_id", "lines", "active_lines", "revenue_fen",
        F.when(F.col("_total") != 0, F.col("revenue_fen") / F.col("_total")).alias("revenue_share"),
        "revenue_change_3m", "churned_lines", "complaint_count",
        F.least(F.lit(h.churn_penalty_per_pct) * churn_pct, F.lit(h.churn_penalty_max)).alias("churn_penalty"),
        F.coalesce(F.least(F.lit(h.decline_penalty_per_pct) * decline_pct, F.lit(h.decline_penalty_max)),
                   F.lit(0.0)).alias("decline_penalty"),
        F.least(F.lit(h.complaint_penalty_per_100_lines) * complaints_per_100,
                F.lit(h.complaint_penalty_max)).alias("complaint_penalty"),
    )
    penalties = F.col("churn_penalty") + F.col("decline_penalty") + F.col("complaint_penalty")
    reasons = F.concat_ws(
        "; ",
        F.when(F.col("churned_lines") > 0, F.format_string(
            "lost %d of %d lines (-%.1f)", F.col("churned_lines"), F.col("lines"), F.col("churn_penalty"))),
        F.when(F.col("decline_penalty") > 0, F.format_string(
            "revenue %.1f %% over 3 months (-%.1f)", 100 * F.col("revenue_change_3m"), F.col("decline_penalty"))),
        F.when(F.col("complaint_count") > 0, F.format_string(
            "%d complaints (-%.1f)", F.col("complaint_count"), F.col("complaint_penalty"))),
    )
    return out.withColumn("health_score", F.round(F.greatest(100 - penalties, F.lit(0.0)), 2)).withColumn(
        "health_reasons", F.when(reasons == "", F.lit("no churn, decline or complaints")).otherwise(reasons))
