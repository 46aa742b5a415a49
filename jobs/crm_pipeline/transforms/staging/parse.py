"""Split raw lines into fields (bronze) and type and validate them (silver staging).

Every rejected record carries `reject_reason` (a reason code below) and `reject_detail`
(field and masked value). Checks run in a fixed order and the first failure wins, so each bad
record has exactly one reason:

    bad_encoding -> field_count -> missing_value -> bad_msisdn -> bad_number -> bad_timestamp
    -> bad_code -> out_of_range (per field, in field order) -> outside_window -> unknown_subscriber
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from crm_pipeline.columns import MSISDN_PATTERN, day_start, mask_value, normalise_msisdn
from crm_pipeline.feeds import FeedSpec, FieldSpec

REASONS = (
    "bad_encoding",
    "field_count",
    "missing_value",
    "bad_msisdn",
    "bad_number",
    "bad_timestamp",
    "bad_code",
    "out_of_range",
    "outside_window",
    "unknown_subscriber",
)

LINEAGE = ["business_date", "delivery_id", "source_file", "line_no"]
LATE_DAYS = 3


def split_raw_lines(lines: DataFrame, spec: FeedSpec) -> DataFrame:
    """Raw numbered lines -> one string column per contract field, or a structural rejection.

    Input grain: one row per non-blank delivered line (LINEAGE + raw_line + decode_ok).
    Output: the same rows with the feed's fields as strings (empty -> NULL), `reject_reason`
    (bad_encoding / field_count or NULL) and `reject_detail`.
    """
    parts = F.split(F.col("raw_line"), r"\|", -1)
    n = F.size(parts)
    reason = (
        F.when(~F.col("decode_ok"), F.lit("bad_encoding"))
        .when(n != spec.n_fields, F.lit("field_count"))
    )
    detail = (
        F.when(~F.col("decode_ok"), F.lit("bytes not valid in the declared encoding"))
        .when(n != spec.n_fields, F.format_string(f"expected {spec.n_fields} fields, found %d", n))
    )
    fields = [F.nullif(parts.getItem(i), F.lit("")).alias(f.name) for i, f in enumerate(spec.fields)]
    structural_ok = F.col("decode_ok") & (n == spec.n_fields)
    return lines.select(
        *LINEAGE,
        "raw_line",
        *[F.when(structural_ok, c).alias(f.name) for c, f in zip(fields, spec.fields)],
        reason.alias("reject_reason"),
        detail.alias("reject_detail"),
    )


def raw_line(spec: FeedSpec) -> Column:
    """The delivered line rebuilt from bronze string fields (NULL fields were empty)."""
    return F.concat_ws("|", *[F.coalesce(F.col(f.name), F.lit("")) for f in spec.fields])


def _field_checks(f: FieldSpec, raw: Column) -> tuple[Column, list[tuple[Column, str, Column]]]:
    """The typed value of one field and its ordered (failure condition, reason, shown value) checks."""
    shown = mask_value(raw) if f.pii else raw
    checks: list[tuple[Column, str, Column]] = []
    present = raw.isNotNull()
    if not f.nullable:
        checks.append((raw.isNull(), "missing_value", F.lit("<empty>")))
    if f.type == "msisdn":
        raw = normalise_msisdn(raw)
        checks.append((present & ~raw.rlike(MSISDN_PATTERN), "bad_msisdn", shown))
        typed = raw
    elif f.type == "phone":
        typed = normalise_msisdn(raw)
    elif f.type in ("int", "long"):
        typed = raw.try_cast(f.spark_type)
        checks.append((present & (~raw.rlike(r"^-?\d{1,18}$") | typed.isNull()), "bad_number", raw))
    elif f.type == "timestamp":
        typed = F.try_to_timestamp(raw, F.lit("yyyyMMddHHmmss"))
        checks.append((present & (~raw.rlike(r"^\d{14}$") | typed.isNull()), "bad_timestamp", raw))
    elif f.type == "date":
        typed = F.try_to_date(raw, "yyyyMMdd")
        checks.append((present & (~raw.rlike(r"^\d{8}$") | typed.isNull()), "bad_timestamp", raw))
    elif f.type == "month":
        typed = F.try_to_date(F.concat(raw, F.lit("01")), "yyyyMMdd")
        checks.append((present & (~raw.rlike(r"^\d{6}$") | typed.isNull()), "bad_timestamp", raw))
    elif f.type == "flag":
        typed = F.when(raw == "1", True).when(raw == "0", False)
        checks.append((present & typed.isNull(), "bad_code", raw))
    else:
        typed = raw
    if f.allowed:
        checks.append((present & ~raw.isin(*f.allowed), "bad_code", shown))
    if f.min is not None:
        checks.append((typed.isNotNull() & (typed < f.min), "out_of_range", raw))
    if f.max is not None:
        checks.append((typed.isNotNull() & (typed > f.max), "out_of_range", raw))
    return typed.cast(f.spark_type), checks


def window_violation(spec: FeedSpec) -> tuple[Column, Column] | None:
    """Condition (on typed columns) under which a record lies outside its delivery's time window.

    Event feeds: the event time must fall in [business date - 3 days, business date + 1 day).
    Tickets are re-delivered when they change, so their window applies to the last change
    (resolution, else creation). Snapshots may not describe the future; bills may not bill a
    month after the bill run.
    """
    d = F.col("business_date")
    lo, hi = day_start(F.date_sub(d, LATE_DAYS)), day_start(F.date_add(d, 1))
    if spec.feed == "ticket":
        changed = F.coalesce(F.col("resolved_time"), F.col("created_time"))
        bad = (changed < lo) | (changed >= hi) | (F.col("created_time") >= hi)
        return bad, F.date_format(changed, "yyyyMMddHHmmss")
    if spec.kind == "event" and spec.event_time:
        t = F.col(spec.event_time)
        if spec.field(spec.event_time).type == "date":
            bad = (t < F.date_sub(d, LATE_DAYS)) | (t > d)
            return bad, F.date_format(t, "yyyyMMdd")
        return (t < lo) | (t >= hi), F.date_format(t, "yyyyMMddHHmmss")
    if spec.feed == "subscriber":
        bad = (F.col("activation_date") > d) | (F.col("status_date") > d)
        return bad, F.concat_ws("/", F.date_format("activation_date", "yyyyMMdd"), F.date_format("status_date", "yyyyMMdd"))
    if spec.feed == "bill":
        return F.col("bill_month") > F.trunc(d, "month"), F.date_format("bill_month", "yyyyMM")
    return None


def type_and_validate(bronze: DataFrame, spec: FeedSpec) -> DataFrame:
    """Bronze string fields -> typed contract fields with a reject reason (NULL when valid).

    Input: bronze rows (LINEAGE + the feed's fields as strings). Output: LINEAGE, `raw_line`
    (the line rebuilt from its fields, for the quarantine), typed fields, reject reason and detail.
    """
    typed_cols, conditions = [], []
    for f in spec.fields:
        typed, checks = _field_checks(f, F.col(f.name))
        typed_cols.append(typed.alias(f.name))
        conditions.extend((cond, reason, F.concat(F.lit(f"{f.name}="), F.coalesce(shown, F.lit("<null>"))))
                          for cond, reason, shown in checks)
    reason = F.coalesce(*[F.when(c, F.lit(r)) for c, r, _ in conditions])
    detail = F.coalesce(*[F.when(c, d) for c, _, d in conditions])
    out = bronze.select(
        *LINEAGE,
        raw_line(spec).alias("raw_line"),
        *typed_cols,
        reason.cast(T.StringType()).alias("reject_reason"),
        detail.cast(T.StringType()).alias("reject_detail"),
    )
    window = window_violation(spec)
    if window is not None:
        bad, shown = window
        out = out.withColumn(
            "reject_detail",
            F.when(F.col("reject_reason").isNull() & bad,
                   F.concat(F.lit("event time "), F.coalesce(shown, F.lit("<null>")),
                            F.lit(" outside the delivery window"))).otherwise(F.col("reject_detail")),
        ).withColumn(
            "reject_reason",
            F.when(F.col("reject_reason").isNull() & bad, F.lit("outside_window")).otherwise(F.col("reject_reason")),
        )
    return out
