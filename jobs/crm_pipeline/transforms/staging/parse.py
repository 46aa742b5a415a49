"""Split raw lines into fields (bronze) and type and validate them (silver staging).

Every rejected record carries `reject_reason` (a reason code below) and `reject_detail`
(field and masked value). Checks run in a fixed order and the first failure wins, so each bad
record has exactly one reason:

    bad_encoding -> field_count -> missing_value -> bad_msisdn -> bad_number -> bad_timestamp
    -> bad_code -> out_of_range (per field, in field order) -> outside_window -> unknown_subscriber
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from crm_pipeline.columns import literal_array
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
#: LINEAGE of records numbered by a `FileIndex`: the file's number in place of its two strings
_NUMBERED_LINEAGE_DDL = "business_date date, _file int, line_no long"
#: columns of structurally rejected lines numbered by a `FileIndex` (`spark_io.TypedCopy`'s rejects)
STRUCTURAL_SCHEMA = f"{_NUMBERED_LINEAGE_DDL}, raw_line string, reject_reason string, reject_detail string"
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


class FileIndex:
    """The delivered files a frame of typed records comes from, numbered in the order of their names.

    The silver stage carries each record's file as its number here (`_file`, an int) instead of its
    two lineage strings (`delivery_id` and `source_file`, about 80 bytes a record) through the
    typing's return from Python, the dedup's shuffle and sort, and the batch's cache; `lineage`
    puts the strings back where rows leave the stage. Numbered in name order (`extended` adds files
    of other business dates after them), `_file` orders a record's versions as `source_file` does.
    """

    def __init__(self, files: Iterable[tuple[str, str]]):
        """`files`: (source_file, delivery_id) of every file whose records the frame may hold."""
        pairs = sorted(set(files))
        self.names = [name for name, _ in pairs]
        self.deliveries = [delivery for _, delivery in pairs]
        if len(set(self.names)) != len(self.names):
            raise ValueError("a source file with two delivery ids: " + ", ".join(
                sorted({n for n in self.names if self.names.count(n) > 1})))

    def extended(self, files: Iterable[tuple[str, str]]) -> FileIndex:
        """This index with more files numbered after its own (in their name order), so that records
        numbered by it keep their numbers. Only for files of other business dates than this index's:
        versions are ordered by business date before their file (`silver.latest_version_wins`), so
        the numbers still order the files of each business date as their names do."""
        mine = set(self.names)
        more = FileIndex(pair for pair in files if pair[0] not in mine)
        out = FileIndex([])
        out.names, out.deliveries = self.names + more.names, self.deliveries + more.deliveries
        return out

    def numbered(self, batch: pa.RecordBatch, value_set: pa.Array) -> pa.RecordBatch:
        """A typed batch (`validate.typed_names`) with `delivery_id` and `source_file` replaced by
        `_file`; `value_set`: `self.names` as an Arrow array, built once per task."""
        at = pc.index_in(batch.column("source_file"), value_set=value_set)
        if at.null_count:
            missing = pc.filter(batch.column("source_file"), pc.is_null(at))[0].as_py()
            raise ValueError(f"a record of {missing}, a file not in the index of the batch's files")
        names = [n for n in batch.schema.names if n not in ("delivery_id", "source_file")]
        arrays = [batch.column(n) for n in names]
        return pa.RecordBatch.from_arrays([arrays[0], at.cast(pa.int32()), *arrays[1:]],
                                          names=[names[0], "_file", *names[1:]])

    def _of(self, values: list[str]) -> Column:
        if not values:  # no files, so no records
            return F.lit(None).cast("string")
        return F.element_at(literal_array(values), F.col("_file") + 1)

    def number(self, source_file: Column) -> Column:
        """The number of a file named by `source_file` (a lookup through the list: for few rows)."""
        if not self.names:
            return F.lit(None).cast("int")
        return (F.array_position(literal_array(self.names), source_file) - 1).cast("int")

    def source_file(self) -> Column:
        return self._of(self.names).alias("source_file")

    def lineage(self) -> list[Column]:
        """The LINEAGE columns of records that carry `_file`, in LINEAGE's order."""
        return [F.col("business_date"), self._of(self.deliveries).alias("delivery_id"), self.source_file(),
                F.col("line_no")]


def typed_schema(spec: FeedSpec, numbered: bool = False) -> str:
    """Columns of `type_and_validate`'s output, as a Spark DDL string (`numbered`: with `_file`
    in place of `delivery_id` and `source_file`)."""
    fields = ", ".join(f"{f.name} {f.spark_type.simpleString()}" for f in spec.fields)
    lineage = _NUMBERED_LINEAGE_DDL if numbered else _LINEAGE_DDL
    return f"{lineage}, raw_line string, {fields}, reject_reason string, reject_detail string"


def type_and_validate(bronze: DataFrame, spec: FeedSpec, files: FileIndex | None = None) -> DataFrame:
    """Bronze string fields -> typed contract fields with a reject reason (NULL when valid).

    Input: bronze rows (LINEAGE + the feed's fields as strings). Output: LINEAGE, `raw_line`
    (the line rebuilt from its fields, for the quarantine), typed fields, reject reason and detail;
    with `files`, `_file` (the record's file in that index) in place of `delivery_id` and
    `source_file`. The checks run vectorised on Arrow batches inside the tasks
    (`validate.validate_batch`).
    """
    def validate(batches):
        value_set = pa.array(files.names, pa.string()) if files is not None else None
        for batch in batches:
            typed = validate_batch(batch, spec)
            yield typed if files is None else files.numbered(typed, value_set)

    return bronze.select(*LINEAGE, *spec.field_names).mapInArrow(
        validate, typed_schema(spec, numbered=files is not None))
