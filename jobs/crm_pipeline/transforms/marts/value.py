"""Customer value appraisal: component scores, current- and potential-value indices, four segments.

Every score is a fixed function of one subscriber's own data and the reference points of
`config/analytics.json` (docs/value.md), so an index never moves because other subscribers did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from crm_pipeline.settings import config_section

SEGMENTS = ("VALUABLE", "SUB_VALUABLE", "POTENTIAL", "LOW_VALUE")
CURRENT_COMPONENTS = ("revenue", "margin", "payment")
POTENTIAL_COMPONENTS = ("revenue_growth", "data_growth", "tenure", "data_adoption", "network", "life_stage",
                        "calling_circle", "on_net_share")
MB = 1048576


@dataclass(frozen=True)
class ValueSettings:
    """The `value_segments` section of config/analytics.json, one field per key."""

    current_value_weights: dict
    potential_value_weights: dict
    high_current_from: float
    high_potential_from: float
    revenue: dict
    margin: dict
    cost_to_serve: dict
    payment: dict
    growth: dict
    tenure: dict
    data_adoption: dict
    network: dict
    life_stage: dict
    calling_circle: dict

    @classmethod
    def from_config(cls, section: dict) -> ValueSettings:
        settings = cls(**config_section(section))
        for name, weights, known in (("current", settings.current_value_weights, CURRENT_COMPONENTS),
                                     ("potential", settings.potential_value_weights, POTENTIAL_COMPONENTS)):
            unknown = set(weights) - set(known)
            if unknown or not weights or sum(weights.values()) <= 0:
                raise ValueError(f"value_segments.{name}_value_weights: components must be among {known} "
                                 f"with a positive sum; got {weights}")
        return settings


def log_score(x: Column, reference: float, full: float) -> Column:
    """100 x min(1, ln(1 + max(x,0)/reference) / ln(1 + full/reference)): 0 at 0, 100 from `full` on."""
    value = F.log1p(F.greatest(x, F.lit(0.0)) / F.lit(float(reference))) / F.lit(math.log1p(full / reference))
    return 100 * F.least(value, F.lit(1.0))


def growth_score(now: Column, prior: Column, smoothing: float, full_ratio: float, neutral: float) -> Column:
    """50 + 50 x clip(ln((now+k)/(prior+k)) / ln R, -1, 1); `neutral` when there is no prior."""
    k = F.lit(float(smoothing))
    ratio = F.log((F.greatest(now, F.lit(0.0)) + k) / (F.greatest(prior, F.lit(0.0)) + k)) / F.lit(math.log(full_ratio))
    clipped = F.greatest(F.least(ratio, F.lit(1.0)), F.lit(-1.0))
    return F.when(prior.isNull(), F.lit(float(neutral))).otherwise(50 + 50 * clipped)


def with_margin(rows: DataFrame, cost: dict) -> DataFrame:
    """margin_fen = revenue_fen - cost to serve (fixed per line + unit costs of the month's usage), 2 decimals."""
    serve = (F.lit(float(cost["per_line_fen"])) + F.lit(float(cost["per_voice_min_fen"])) * F.col("voice_mou")
             + F.lit(float(cost["per_sms_fen"])) * F.col("sms_count")
             + F.lit(float(cost["per_data_mb_fen"])) * F.col("data_mb"))
    return rows.withColumn("margin_fen", F.round(F.col("revenue_fen") - serve, 2))


def monthly_contacts(pairs: DataFrame) -> DataFrame:
    """gold contact_months -> per subscriber and month: distinct voice contacts and how many are on-net.

    A party counts when the subscriber had at least one call with it (either direction) in the month;
    it is on-net when any of those days says ON_NET (the largest operator code, so the pairs'
    `call_operator`, the max over the days with a call, says it).
    """
    return pairs.where(F.col("calls") > 0).groupBy("subscriber_id", "month").agg(
        F.count(F.lit(1)).alias("voice_contacts"),
        F.sum((F.col("call_operator") == "ON_NET").cast("long")).alias("on_net_contacts"),
    )


def plan_allowances(plans: DataFrame) -> DataFrame:
    """silver plan snapshots of month ends -> (plan_id, month, included_data_mb)."""
    return plans.where(F.col("snapshot_date") == F.last_day("snapshot_date")).select(
        "plan_id", F.trunc("snapshot_date", "month").alias("month"), "included_data_mb"
    )


def _payment_score(s: ValueSettings) -> Column:
    p = s.payment
    arrears = F.least(F.col("arrears_fen") / F.lit(float(p["arrears_reference_fen"])), F.lit(1.0))
    postpaid = F.greatest(F.least(100 * F.col("on_time_share") - F.lit(float(p["arrears_max_penalty"])) * arrears,
                                  F.lit(100.0)), F.lit(0.0))
    postpaid = F.when(F.coalesce(F.col("bills_due"), F.lit(0)) == 0, F.lit(float(p["neutral"]))).otherwise(postpaid)
    prepaid = 100.0 * F.col("recharge_months_3m") / F.col("rows_3m")
    return F.when(F.col("payment_type") == "PREPAID", prepaid).otherwise(postpaid)


def _life_stage_score(s: ValueSettings) -> Column:
    age = F.year("month") - F.col("birth_year")
    score = F.lit(None).cast("double")
    for lo, hi, value in reversed(s.life_stage["bands"]):
        score = F.when(age.between(lo, hi), F.lit(float(value))).otherwise(score)
    return F.coalesce(score, F.lit(float(s.life_stage["neutral"])))


def _network_score(s: ValueSettings) -> Column:
    mapping = F.create_map(*[x for gen, v in sorted(s.network.items()) for x in (F.lit(gen), F.lit(float(v)))])
    return F.coalesce(mapping[F.col("network_gen")], F.lit(0.0))


def component_scores(s: ValueSettings) -> dict[str, Column]:
    """Column name -> expression of every component score (0-100), per docs/value.md."""
    g = s.growth
    allowance = F.when(F.col("included_data_mb") > 0, F.col("included_data_mb").cast("double")).otherwise(
        F.lit(float(s.data_adoption["reference_mb_without_allowance"])))
    contacts = F.coalesce(F.col("voice_contacts"), F.lit(0))
    return {
        "cv_revenue": log_score(F.col("arpu_3m_fen"), s.revenue["reference_fen"], s.revenue["full_fen"]),
        "cv_margin": log_score(F.col("margin_3m_fen"), s.margin["reference_fen"], s.margin["full_fen"]),
        "cv_payment": _payment_score(s),
        "pv_revenue_growth": growth_score(F.col("revenue_fen"), F.col("revenue_prior_fen"),
                                          g["revenue_smoothing_fen"], g["full_ratio"], g["neutral"]),
        "pv_data_growth": growth_score(F.col("data_mb"), F.col("data_mb_prior"),
                                       g["data_smoothing_mb"], g["full_ratio"], g["neutral"]),
        "pv_tenure": log_score(F.col("tenure_months"), s.tenure["reference_months"], s.tenure["full_months"]),
        "pv_data_adoption": 100 * F.least(F.col("data_mb") / allowance, F.lit(1.0)),
        "pv_network": _network_score(s),
        "pv_life_stage": _life_stage_score(s),
        "pv_calling_circle": log_score(contacts, s.calling_circle["reference_contacts"],
                                       s.calling_circle["full_contacts"]),
        "pv_on_net_share": F.when(contacts > 0, 100.0 * F.coalesce(F.col("on_net_contacts"), F.lit(0)) / contacts)
        .otherwise(F.lit(0.0)),
    }


def with_value_components(
    rows: DataFrame, payment: DataFrame, contacts: DataFrame, allowances: DataFrame, settings: ValueSettings
) -> DataFrame:
    """Join the inputs the scores need and add every component score column.

    `rows` carry the trailing statistics of `with_trailing_windows` and `account_id`;
    `payment` is `payment_behaviour` (account_id x month); `contacts` is `monthly_contacts`;
    `allowances` is `plan_allowances`.
    """
    joined = (
        rows.join(payment, ["account_id", "month"], "left")
        .join(contacts, ["subscriber_id", "month"], "left")
        .join(allowances, ["plan_id", "month"], "left")
    )
    return with_component_scores(joined, settings)


def with_component_scores(rows: DataFrame, settings: ValueSettings) -> DataFrame:
    """Add the cv_* and pv_* score columns to rows that already carry every input they read."""
    for name, expr in component_scores(settings).items():
        rows = rows.withColumn(name, expr.cast("double"))
    return rows


def _index(weights: dict[str, float], prefix: str) -> Column:
    total = float(sum(weights.values()))
    parts = [F.lit(float(w)) * F.col(f"{prefix}_{name}") for name, w in sorted(weights.items())]
    return F.round(sum(parts[1:], parts[0]) / total, 2)


def with_value_segments(rows: DataFrame, settings: ValueSettings) -> DataFrame:
    """Add current_value_index, potential_value_index (0-100, 2 decimals) and value_segment.

    Needs the component columns of `with_value_components`.
    """
    hi_cur = F.col("current_value_index") >= settings.high_current_from
    hi_pot = F.col("potential_value_index") >= settings.high_potential_from
    return (
        rows.withColumn("current_value_index", _index(settings.current_value_weights, "cv"))
        .withColumn("potential_value_index", _index(settings.potential_value_weights, "pv"))
        .withColumn(
            "value_segment",
            F.when(hi_cur & hi_pot, "VALUABLE").when(hi_cur, "SUB_VALUABLE").when(hi_pot, "POTENTIAL")
            .otherwise("LOW_VALUE"),
        )
    )
