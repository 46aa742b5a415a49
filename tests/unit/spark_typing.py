"""The typing and validation rules as Spark column expressions: how `parse.type_and_validate` worked
before it moved to vectorised Arrow (`validate.validate_batch`), kept as an independent statement
of the same rules for the equivalence test. Not used by the pipeline."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from crm_pipeline.columns import mask_value
from crm_pipeline.feeds import FeedSpec, FieldSpec
from crm_pipeline.transforms.staging.validate import LATE_DAYS, LINEAGE

MSISDN_PATTERN = r"^\d{11}$"


def normalise_msisdn(col: Column) -> Column:
    """Drop a `+86` / `86` country prefix in front of an 11-digit number; keep anything else as is."""
    return F.regexp_replace(col, r"^(\+86|86)(?=\d{11}$)", "")


def day_start(date_col: Column) -> Column:
    """Midnight of a DATE as a local wall-clock TIMESTAMP_NTZ (how BOSS times are stored)."""
    return date_col.cast(T.TimestampNTZType())


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

    The checks yield the index of the first one failing; reason and detail text are looked up
    from it, so a valid record pays for the checks and nothing else.
    """
    typed_cols, conditions = [], []
    for f in spec.fields:
        typed, checks = _field_checks(f, F.col(f.name))
        typed_cols.append(typed.alias(f.name))
        conditions.extend((cond, reason) for cond, reason, _ in checks)
    failed = F.coalesce(*[F.when(c, F.lit(i)) for i, (c, _) in enumerate(conditions)]) if conditions \
        else F.lit(None).cast("int")
    stage1 = bronze.select(
        *LINEAGE,
        raw_line(spec).alias("raw_line"),
        *typed_cols,
        failed.alias("_failed"),
    )
    parts = F.split(F.col("raw_line"), r"\|", -1)
    strings = {f.name: F.nullif(parts.getItem(i), F.lit("")) for i, f in enumerate(spec.fields)}
    details = [F.concat(F.lit(f"{f.name}="), F.coalesce(shown, F.lit("<null>")))
               for f in spec.fields for _, _, shown in _field_checks(f, strings[f.name])[1]]
    reason_of = F.lit(None).cast(T.StringType())
    detail_of = F.lit(None).cast(T.StringType())
    if conditions:
        failing = F.col("_failed")
        reason_of, detail_of = F.when(F.lit(False), F.lit(None)), F.when(F.lit(False), F.lit(None))
        for i, ((_, reason), detail) in enumerate(zip(conditions, details)):
            reason_of = reason_of.when(failing == i, F.lit(reason))
            detail_of = detail_of.when(failing == i, detail)
        reason_of, detail_of = F.when(failing.isNotNull(), reason_of), F.when(failing.isNotNull(), detail_of)
    window = window_violation(spec)
    if window is not None:
        bad, shown = window
        outside = F.col("_failed").isNull() & bad
        reason_of = F.when(outside, F.lit("outside_window")).otherwise(reason_of)
        detail_of = F.when(outside, F.concat(F.lit("event time "), F.coalesce(shown, F.lit("<null>")),
                                             F.lit(" outside the delivery window"))).otherwise(detail_of)
    return stage1.select(
        *LINEAGE,
        "raw_line",
        *[f.name for f in spec.fields],
        reason_of.cast(T.StringType()).alias("reject_reason"),
        detail_of.cast(T.StringType()).alias("reject_detail"),
    )
