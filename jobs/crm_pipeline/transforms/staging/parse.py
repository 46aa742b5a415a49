"""Split raw lines into fields (bronze) and type and validate them (silver staging).

Every rejected record carries `reject_reason` (a reason code below) and `reject_detail`
(field and masked value). Checks run in a fixed order and the first failure wins, so each bad
record has exactly one reason:

    bad_encoding -> field_count -> missing_value -> bad_msisdn -> bad_number -> bad_timestamp
    -> bad_code -> out_of_range (per field, in field order) -> outside_window -> unknown_subscriber
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame

from crm_pipeline.feeds import FeedSpec
from crm_pipeline.transforms.staging.validate import LINEAGE, validate_batch

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

_LINEAGE_DDL = "business_date date, delivery_id string, source_file string, line_no long"
#: what a structurally rejected line keeps (NULL on accepted lines)
REJECT_COLUMNS = ["raw_line", "reject_reason", "reject_detail"]


def bronze_schema(spec: FeedSpec) -> str:
    """Columns of the split lines: lineage, the feed's fields as strings, and for structurally
    rejected lines their raw text and reason (NULL on accepted lines)."""
    fields = ", ".join(f"{f.name} string" for f in spec.fields)
    return f"{_LINEAGE_DDL}, {fields}, raw_line string, reject_reason string, reject_detail string"


def split_fields(texts: pa.Array, decode_ok: pa.Array, spec: FeedSpec) -> list[pa.Array]:
    """Split lines on `|` into the feed's fields (Arrow compute, no Python object per line).

    Returns one string array per field (empty -> NULL; all NULL on a rejected line), then
    `raw_line` (rejected lines only), `reject_reason` (bad_encoding / field_count or NULL) and
    `reject_detail`.
    """
    n, nf = len(texts), spec.n_fields
    parts = pc.split_pattern(texts, "|")
    found = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    ok = decode_ok.to_numpy(zero_copy_only=False).astype(bool)
    good = ok & (found == nf)
    flat = pc.list_flatten(parts if good.all() else pc.filter(parts, pa.array(good)))
    at = None if good.all() else pa.array(np.cumsum(good) - 1, mask=~good)
    out = []
    for i in range(nf):
        column = flat.take(pa.array(np.arange(i, len(flat), nf, dtype=np.int64)))
        if at is not None:
            column = column.take(at)
        out.append(pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column))
    if good.all():
        nulls = pa.nulls(n, pa.string())
        return [*out, nulls, nulls, nulls]
    reasons, details = [None] * n, [None] * n
    for i in np.flatnonzero(~good):
        if not ok[i]:
            reasons[i], details[i] = "bad_encoding", "bytes not valid in the declared encoding"
        else:
            reasons[i], details[i] = "field_count", f"expected {nf} fields, found {found[i]}"
    raw = pc.if_else(pa.array(good), pa.scalar(None, pa.string()), texts)
    return [*out, raw, pa.array(reasons, pa.string()), pa.array(details, pa.string())]


def split_raw_lines(lines: DataFrame, spec: FeedSpec) -> DataFrame:
    """Raw numbered lines (LINEAGE + raw_line + decode_ok) -> `bronze_schema(spec)` rows.

    The delivery reader splits the same way inside its tasks; this form serves frames of lines.
    """
    def split(batches):
        for b in batches:
            cols = split_fields(b.column("raw_line"), b.column("decode_ok"), spec)
            yield pa.RecordBatch.from_arrays([b.column(c) for c in LINEAGE] + cols,
                                             names=LINEAGE + spec.field_names + REJECT_COLUMNS)

    return lines.select(*LINEAGE, "raw_line", "decode_ok").mapInArrow(split, bronze_schema(spec))


def typed_schema(spec: FeedSpec) -> str:
    """Columns of `type_and_validate`'s output, as a Spark DDL string."""
    fields = ", ".join(f"{f.name} {f.spark_type.simpleString()}" for f in spec.fields)
    return f"{_LINEAGE_DDL}, raw_line string, {fields}, reject_reason string, reject_detail string"


def type_and_validate(bronze: DataFrame, spec: FeedSpec) -> DataFrame:
    """Bronze string fields -> typed contract fields with a reject reason (NULL when valid).

    Input: bronze rows (LINEAGE + the feed's fields as strings). Output: LINEAGE, `raw_line`
    (the line rebuilt from its fields, for the quarantine), typed fields, reject reason and detail.
    The checks run vectorised on Arrow batches inside the tasks (`validate.validate_batch`).
    """
    def validate(batches):
        for batch in batches:
            yield validate_batch(batch, spec)

    return bronze.select(*LINEAGE, *spec.field_names).mapInArrow(validate, typed_schema(spec))
