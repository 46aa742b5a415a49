"""Customer lifetime value on subscriber_month: sBG retention per cohort group, fitted per month.

Spark builds the exposures (subscriber-months at risk, by tenure) and applies the value; the fit
itself runs on the driver over those few aggregated rows (`crm_pipeline.models.clv`).
docs/value.md ("Customer lifetime value") defines every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline.models.clv import derl, fit_sbg_exposures, monthly_rate
from crm_pipeline.months import add_months
from crm_pipeline.settings import config_section

CLV_MODEL_SCHEMA = (
    "month date, cohort_group string, payment_type string, value_segment string, fit_level string, "
    "alpha double, beta double, exposures long, churned long, log_likelihood double, converged boolean, "
    "window_start date, monthly_discount_rate double, horizon_months int"
)


@dataclass(frozen=True)
class ClvSettings:
    """The `clv` section of config/analytics.json."""

    annual_discount_rate: float
    horizon_months: int | None
    fit_window_months: int
    cohort_groups: list
    min_churned: int
    min_at_risk: int

    @classmethod
    def from_config(cls, section: dict) -> ClvSettings:
        settings = cls(**config_section(section))
        if list(settings.cohort_groups) != ["payment_type", "value_segment"]:
            raise ValueError("clv.cohort_groups: only [payment_type, value_segment] is supported")
        return settings


def clv_exposures(rows: DataFrame) -> DataFrame:
    """Subscriber-months at risk per month M', cohort group and tenure.

    Every row of M' opening the month (active at the end of M'-1) whose subscriber also has a row
    in M'-1: tenure = tenure_months of M'-1, group = payment_type and value_segment of M'-1,
    churned = churned_in_month of M'. Grain: month x payment_type x value_segment x tenure.
    """
    prev = rows.select(
        "subscriber_id", F.add_months("month", 1).alias("month"), F.col("tenure_months").alias("tenure"),
        "payment_type", "value_segment",
    )
    cur = rows.where("opening").select("subscriber_id", "month", "churned_in_month")
    return cur.join(prev, ["subscriber_id", "month"]).groupBy("month", "payment_type", "value_segment", "tenure").agg(
        F.count(F.lit(1)).alias("at_risk"), F.sum(F.col("churned_in_month").cast("long")).alias("churned"),
    )


def fit_clv_models(exposures: list[tuple], months: list[date], groups: list[tuple[str, str]],
                   settings: ClvSettings) -> list[tuple]:
    """One model row (CLV_MODEL_SCHEMA) per month and cohort group.

    `exposures`: collected rows of `clv_exposures` (month, payment_type, value_segment, tenure,
    at_risk, churned). A group with too few churners or exposures in the window borrows the fit of
    its payment type, then of the whole base; with no usable fit at all the parameters are NULL.
    """
    d = monthly_rate(settings.annual_discount_rate)
    out = []
    for month in months:
        start = add_months(month, -(settings.fit_window_months - 1))
        window = [e for e in exposures if start <= e[0] <= month]
        fits: dict[tuple, tuple] = {}

        def fit(level: str, key: tuple, select) -> tuple | None:
            if key in fits:
                return fits[key]
            by_tenure: dict[int, list[int]] = {}
            for e in window:
                if select(e):
                    agg = by_tenure.setdefault(int(e[3]), [0, 0])
                    agg[0] += int(e[4])
                    agg[1] += int(e[5])
            at_risk = sum(v[0] for v in by_tenure.values())
            churned = sum(v[1] for v in by_tenure.values())
            result = None
            if churned >= settings.min_churned and at_risk >= settings.min_at_risk:
                tenures = sorted(by_tenure)
                try:
                    f = fit_sbg_exposures(tenures, [by_tenure[t][0] for t in tenures], [by_tenure[t][1] for t in tenures])
                    result = (level, f.alpha, f.beta, f.at_risk, f.churned, f.log_likelihood, f.converged)
                except ValueError:
                    result = None
            fits[key] = result
            return result

        for payment_type, segment in groups:
            got = (fit("group", (payment_type, segment), lambda e: e[1] == payment_type and e[2] == segment)
                   or fit("payment_type", (payment_type,), lambda e: e[1] == payment_type)
                   or fit("all", (), lambda e: True))
            level, alpha, beta, n, c, ll, ok = got or (None, None, None, None, None, None, None)
            out.append((month, f"{payment_type}|{segment}", payment_type, segment, level, alpha, beta, n, c, ll, ok,
                        start, d, settings.horizon_months))
    return out


def derl_table(spark: SparkSession, models: list[tuple], tenures: dict[date, list[int]],
               settings: ClvSettings) -> DataFrame:
    """(month, cohort_group, tenure_months, derl) for every fitted group and tenure seen that month."""
    d = monthly_rate(settings.annual_discount_rate)
    rows = []
    for m in models:
        month, group, alpha, beta = m[0], m[1], m[5], m[6]
        if alpha is None or not tenures.get(month):
            continue
        ts = np.array(sorted(tenures[month]), dtype=np.int64)
        values = derl(alpha, beta, ts, d, settings.horizon_months)
        rows += [(month, group, int(t), float(v)) for t, v in zip(ts, values)]
    # broadcast: small, and built on the driver, so Spark cannot see its size and would shuffle the rows
    return F.broadcast(spark.createDataFrame(rows, "month date, cohort_group string, tenure_months int, derl double"))


def with_clv(rows: DataFrame, derl_by_group: DataFrame) -> DataFrame:
    """clv_fen = round(margin_3m_fen x DERL(group, tenure)); 0 when not active at month end
    (churned or terminated); otherwise NULL when the group has no fitted model that month."""
    group = F.concat_ws("|", "payment_type", "value_segment").alias("cohort_group")
    joined = rows.withColumn("cohort_group", group).join(
        derl_by_group, ["month", "cohort_group", "tenure_months"], "left")
    value = F.round(F.col("margin_3m_fen") * F.col("derl")).cast("long")
    return joined.withColumn(
        "clv_fen", F.when(~F.col("closing"), F.lit(0).cast("long")).otherwise(value)
    ).drop("derl", "cohort_group")
