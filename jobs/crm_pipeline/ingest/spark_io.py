"""Spread file reading over Spark tasks: each task reads whole files, balanced by bytes.

gzip is not splittable and exact line numbers need one reader per file, so the unit of work is
a file. The driver only deals out (small) file descriptions; file contents never pass through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from crm_pipeline.feeds import FeedSpec
from crm_pipeline.ingest.landing import Delivery
from crm_pipeline.ingest.reader import FileCheck, FileScan
from crm_pipeline.transforms.staging.parse import REJECT_COLUMNS, bronze_schema, split_fields

LINES_SCHEMA = "business_date date, delivery_id string, source_file string, line_no long, raw_line string, decode_ok boolean"
_ARROW_LINES = pa.schema([
    ("business_date", pa.date32()),
    ("delivery_id", pa.string()),
    ("source_file", pa.string()),
    ("line_no", pa.int64()),
    ("raw_line", pa.string()),
    ("decode_ok", pa.bool_()),
])
_FILES_SCHEMA = ("business_date date, delivery_id string, source_file string, location string, file_name string, "
                 "row_count long, byte_size long, md5 string, codec string, gzipped boolean")
_FILE_FIELDS = [column.split()[0] for column in _FILES_SCHEMA.split(", ")]
CHECK_FAILED = "CRM-DELIVERY-CHECK-FAILED:"


class DeliveryCheckFailed(RuntimeError):
    """Raised inside a task when a file fails its control-line checks: the job (and its write) aborts."""


def source_file(delivery: Delivery, file_name: str) -> str:
    """Lineage name of a delivered file: its path relative to the landing zone."""
    return f"{delivery.feed}/{delivery.business_date:%Y%m%d}/{file_name}"


def _files(deliveries: list[Delivery]) -> list[dict]:
    """One description per listed file (the fields of `_FILES_SCHEMA`)."""
    return [
        dict(zip(_FILE_FIELDS, (d.business_date, d.delivery_id, source_file(d, e.file_name), d.path_of(e),
                                e.file_name, e.row_count, e.byte_size, e.md5, e.python_codec, e.gzipped)))
        for d in deliveries
        for e in d.entries
    ]


def _deal(spark: SparkSession, files: list[dict]):
    """An RDD of the file descriptions, dealt over as many tasks as the cluster has cores, balanced
    by bytes (largest first onto the lightest task)."""
    slots = max(1, min(len(files), spark.sparkContext.defaultParallelism))
    loads = [0] * slots
    groups: list[list[dict]] = [[] for _ in range(slots)]
    for f in sorted(files, key=lambda f: -f["byte_size"]):
        i = loads.index(min(loads))
        loads[i] += max(f["byte_size"], 1)
        groups[i].append(f)
    return spark.sparkContext.parallelize(groups, slots).flatMap(lambda group: group)


def _scan(row: dict) -> FileScan:
    return FileScan(row["location"], row["file_name"], row["row_count"], row["byte_size"], row["md5"],
                    row["codec"], row["gzipped"])


def _read_files(batches: Iterator[pa.RecordBatch], spec: FeedSpec | None) -> Iterator[pa.RecordBatch]:
    names = _ARROW_LINES.names[:4] + (
        [f.name for f in spec.fields] + REJECT_COLUMNS if spec else _ARROW_LINES.names[4:])
    for batch in batches:
        for row in batch.to_pylist():
            scan = _scan(row)
            for numbers, texts, oks in scan.batches():
                n = len(numbers)
                lineage = [
                    pa.repeat(pa.scalar(row["business_date"], pa.date32()), n),
                    pa.repeat(pa.scalar(row["delivery_id"], pa.string()), n),
                    pa.repeat(pa.scalar(row["source_file"], pa.string()), n),
                    numbers,
                ]
                rest = split_fields(texts, oks, spec) if spec else [texts, oks]
                yield pa.RecordBatch.from_arrays(lineage + rest, names=names)
            if scan.check.check:
                # The lines above are already on their way to a write: fail the job so nothing commits.
                raise DeliveryCheckFailed(CHECK_FAILED + json.dumps(
                    {"delivery_id": row["delivery_id"], "file": row["file_name"], "check": scan.check.check,
                     "detail": scan.check.detail}))


def read_lines(spark: SparkSession, deliveries: list[Delivery], spec: FeedSpec | None = None) -> DataFrame:
    """One row per non-blank delivered line: lineage, raw text and whether it decoded cleanly;
    with `spec`, the line split into the feed's fields instead (`bronze_schema(spec)`).

    Every file is verified against its control line while it is read; a file that fails makes the
    Spark job fail with `DeliveryCheckFailed` (see `failed_check`), so a write fed by this frame
    commits either every delivery whole or nothing.
    """
    files = _files(deliveries)
    schema = bronze_schema(spec) if spec else LINES_SCHEMA
    if not files:
        return spark.createDataFrame([], schema)
    rows = _deal(spark, files).map(lambda f: tuple(f[k] for k in _FILE_FIELDS))
    return spark.createDataFrame(rows, _FILES_SCHEMA).mapInArrow(
        lambda batches: _read_files(batches, spec), schema)


def failed_check(exc: BaseException) -> dict | None:
    """The file check that made a `read_lines` job fail, or None if the job failed otherwise."""
    text = str(exc)
    at = text.find(CHECK_FAILED)
    if at < 0:
        return None
    try:
        return json.JSONDecoder().raw_decode(text[at + len(CHECK_FAILED):])[0]
    except ValueError:
        return None


def verify_deliveries(spark: SparkSession, deliveries: list[Delivery]) -> dict[str, list[FileCheck]]:
    """delivery_id -> per-file checks (size, md5, gzip integrity, row count), without decoding."""
    out: dict[str, list[FileCheck]] = {d.delivery_id: [] for d in deliveries}
    files = _files(deliveries)
    if not files:
        return out

    def check(f: dict) -> tuple[str, FileCheck]:
        scan = _scan(f)
        for _ in scan.batches(decode=False):
            pass
        return f["delivery_id"], scan.check

    for delivery_id, result in _deal(spark, files).map(check).collect():
        out[delivery_id].append(result)
    return out
