"""Spread file verification and line reading over Spark tasks, one file per call."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from crm_pipeline.ingest.landing import Delivery
from crm_pipeline.ingest.reader import FileCheck, iter_record_batches, verify_file

LINES_SCHEMA = "business_date date, delivery_id string, source_file string, line_no long, raw_line string, decode_ok boolean"
_ARROW_LINES = pa.schema([
    ("business_date", pa.date32()),
    ("delivery_id", pa.string()),
    ("source_file", pa.string()),
    ("line_no", pa.int64()),
    ("raw_line", pa.string()),
    ("decode_ok", pa.bool_()),
])


def source_file(delivery: Delivery, file_name: str) -> str:
    """Lineage name of a delivered file: its path relative to the landing zone."""
    return f"{delivery.feed}/{delivery.business_date:%Y%m%d}/{file_name}"


def _slices(spark: SparkSession, n_items: int) -> int:
    return max(1, min(n_items, spark.sparkContext.defaultParallelism * 4))


def verify_deliveries(spark: SparkSession, deliveries: list[Delivery]) -> dict[str, list[FileCheck]]:
    """delivery_id -> per-file checks (size, md5, gzip integrity, row count)."""
    items = [
        (d.delivery_id, str(d.path_of(e)), e.file_name, e.row_count, e.byte_size, e.md5, e.gzipped)
        for d in deliveries
        for e in d.entries
    ]
    out: dict[str, list[FileCheck]] = {d.delivery_id: [] for d in deliveries}
    if not items:
        return out
    checked = (
        spark.sparkContext.parallelize(items, _slices(spark, len(items)))
        .map(lambda it: (it[0], verify_file(Path(it[1]), *it[2:])))
        .collect()
    )
    for delivery_id, check in checked:
        out[delivery_id].append(check)
    return out


def _read_files(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for row in batch.to_pylist():
            for numbers, texts, oks in iter_record_batches(Path(row["path"]), row["codec"], row["gzipped"]):
                n = len(numbers)
                if n == 0:
                    continue
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.repeat(pa.scalar(row["business_date"], pa.date32()), n),
                        pa.repeat(pa.scalar(row["delivery_id"], pa.string()), n),
                        pa.repeat(pa.scalar(row["source_file"], pa.string()), n),
                        numbers,
                        texts,
                        oks,
                    ],
                    schema=_ARROW_LINES,
                )


def read_lines(spark: SparkSession, deliveries: list[Delivery]) -> DataFrame:
    """One row per non-blank delivered line: lineage, raw text and whether it decoded cleanly."""
    files = [
        (d.business_date, d.delivery_id, source_file(d, e.file_name), str(d.path_of(e)), e.python_codec, e.gzipped)
        for d in deliveries
        for e in d.entries
    ]
    schema = "business_date date, delivery_id string, source_file string, path string, codec string, gzipped boolean"
    if not files:
        return spark.createDataFrame([], LINES_SCHEMA)
    rdd = spark.sparkContext.parallelize(files, _slices(spark, len(files)))
    return spark.createDataFrame(rdd, schema).mapInArrow(_read_files, LINES_SCHEMA)
