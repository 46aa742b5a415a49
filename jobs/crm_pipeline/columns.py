"""Column -> Column helpers for logic that recurs across jobs. Written once, used everywhere."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql import types as T

MSISDN_PATTERN = r"^\d{11}$"


def normalise_msisdn(col: Column) -> Column:
    """Drop a `+86` / `86` country prefix in front of an 11-digit number; keep anything else as is."""
    return F.regexp_replace(col, r"^(\+86|86)(?=\d{11}$)", "")


def mask_value(col: Column) -> Column:
    """Mask PII for anything that leaves the restricted zone: keep the first 3 and last 2 characters."""
    n = F.length(col)
    return F.when(col.isNull(), F.lit(None)).when(
        n <= 5, F.lit("*****")
    ).otherwise(F.concat(F.substring(col, 1, 3), F.repeat(F.lit("*"), n - 5), F.substring(col, -2, 2)))


def day_start(date_col: Column) -> Column:
    """Midnight of a DATE as a local wall-clock TIMESTAMP_NTZ (how BOSS times are stored)."""
    return date_col.cast(T.TimestampNTZType())


def month_start(col: Column) -> Column:
    """First day of the month of a DATE or TIMESTAMP column, as a DATE."""
    return F.trunc(col, "month")


def fen_to_cny(col: Column) -> Column:
    return (col / F.lit(100)).cast("decimal(18,2)")
