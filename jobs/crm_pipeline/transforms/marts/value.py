"""Customer value appraisal: current- and potential-value indices and the four segments."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

SEGMENTS = ("VALUABLE", "SUB_VALUABLE", "POTENTIAL", "LOW_VALUE")


@dataclass(frozen=True)
class ValueSettings:
    """From config/analytics.json: index weights per subscriber_month column, and thresholds."""

    current_value_weights: dict[str, float]
    potential_value_weights: dict[str, float]
    high_current_from: float
    high_potential_from: float


def _index(weights: dict[str, float]) -> Column:
    total = sum(abs(w) for w in weights.values())
    parts = []
    for column, weight in sorted(weights.items()):
        rank = F.percent_rank().over(Window.partitionBy("month").orderBy(F.col(column)))
        parts.append(abs(weight) * (rank if weight > 0 else 1 - rank))
    return F.round(100 * sum(parts[1:], parts[0]) / total, 2)


def with_value_segments(rows: DataFrame, settings: ValueSettings) -> DataFrame:
    """Add current_value_index, potential_value_index (0-100) and value_segment, within each month."""
    hi_cur = F.col("current_value_index") >= settings.high_current_from
    hi_pot = F.col("potential_value_index") >= settings.high_potential_from
    return (
        rows.withColumn("current_value_index", _index(settings.current_value_weights))
        .withColumn("potential_value_index", _index(settings.potential_value_weights))
        .withColumn(
            "value_segment",
            F.when(hi_cur & hi_pot, "VALUABLE").when(hi_cur, "SUB_VALUABLE").when(hi_pot, "POTENTIAL")
            .otherwise("LOW_VALUE"),
        )
    )
