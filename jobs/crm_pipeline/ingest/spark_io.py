"""Spread file reading over Spark tasks: each task reads whole files, balanced by bytes.

gzip is not splittable and exact line numbers need one reader per file, so the unit of work is
a file. The driver only deals out (small) file descriptions; file contents never pass through it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession

from crm_pipeline.feeds import FeedSpec
from crm_pipeline.ingest.landing import Delivery
from crm_pipeline.ingest.reader import FileCheck, FileScan, resolve
from crm_pipeline.transforms.staging.parse import (
    LINEAGE, REJECT_COLUMNS, FileIndex, bronze_schema, split_fields,
)
from crm_pipeline.transforms.staging.validate import validate_batch

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


def dictionary_columns(spec: FeedSpec) -> list[str]:
    """Bronze columns written with Parquet dictionaries: those the contract gives few values per
    file (the file's lineage and run, the reject reason, code and flag fields). Ids, numbers,
    times and amounts hold about a value per record, so a dictionary of them is built only to be
    given up: 2 M data records of a 1 M-subscriber day took 3.9 s to write with one for every
    column, 1.0 s with these only, in files a tenth smaller."""
    codes = [f.name for f in spec.fields if f.allowed or f.type == "flag"]
    return ["delivery_id", "source_file", "run_id", "reject_reason", *codes]


def _bronze_arrow_schema(spec: FeedSpec) -> pa.Schema:
    """The bronze table's columns in table order (the lines' lineage, the feed's fields as strings,
    `run_id`, the reject columns), every one nullable as Spark writes Delta columns."""
    return pa.schema(list(_ARROW_LINES)[:4] + [pa.field(name, pa.string())
                                               for name in (*spec.field_names, "run_id", *REJECT_COLUMNS)])


_WRITTEN_SCHEMA = "path string, business_date string, size long, rows long, kind string"
_WRITTEN_SCHEMA_NAMES = [column.split()[0] for column in _WRITTEN_SCHEMA.split(", ")]


@dataclass(frozen=True)
class TypedCopy:
    """Where `write_bronze`'s reading tasks also write the records they read typed and validated
    (`validate.validate_batch`, numbered by `files`), so that the silver stage starts from them
    instead of reading bronze back and typing it again, and the structurally rejected lines, so
    that the quarantine and the file counts need not scan bronze for them: `folder` (scratch;
    `write_bronze` clears it first, its caller when the load ends)."""

    folder: str
    files: FileIndex


@dataclass(frozen=True)
class TypedFiles:
    """The files a `TypedCopy` holds after `write_bronze`: `records`, the valid lines typed
    (`parse.typed_schema(spec, numbered=True)`); `rejects`, the structurally rejected lines
    (`parse.STRUCTURAL_SCHEMA`; none when every line split)."""

    records: list[str]
    rejects: list[str]


def _write_parts(batches: Iterator[pa.RecordBatch], spec: FeedSpec, root: str, write_id: str, run_id: str,
                 max_rows: int, codec: str, typed: TypedCopy | None = None) -> Iterator[pa.RecordBatch]:
    """A task of `write_bronze`: read its files (`_read_files`) and write their lines as Parquet
    files of the table under `root`, one file per business date (a new one every `max_rows`
    rows), named part-<write_id>-...; with `typed`, the structurally valid lines typed and validated
    as well, and the rejected ones apart (`TypedFiles`), a file of each per task in `typed.folder`;
    yield what it wrote (`_WRITTEN_SCHEMA`)."""
    import pyarrow.parquet as pq

    schema = _bronze_arrow_schema(spec)
    file_schema = schema.remove(schema.get_field_index("business_date"))
    fs, base = resolve(root)
    open_files: dict[str, tuple[str, object, int]] = {}  # day -> (relative path, writer, rows)
    written: list[tuple[str, str, int]] = []  # (relative path, day, rows)
    dictionaries = dictionary_columns(spec)
    typed_out: dict[str, list] = {}  # kind -> [file name, writer, rows] of the task's typed files, once opened
    value_set = pa.array(typed.files.names, pa.string()) if typed is not None else None

    def close(day: str) -> None:
        rel, writer, rows = open_files.pop(day)
        writer.close()
        written.append((rel, day, rows))

    def write_copy(kind: str, records: pa.RecordBatch) -> None:
        if kind not in typed_out:
            typed_fs, typed_base = resolve(typed.folder)
            typed_fs.create_dir(typed_base, recursive=True)
            name = f"{kind}-{write_id}-{uuid.uuid4()}.{codec}.parquet"
            # read once, whole: no dictionaries (ids, numbers and times would only fall back from them)
            typed_out[kind] = [name, pq.ParquetWriter(f"{typed_base}/{name}", records.schema, filesystem=typed_fs,
                                                      compression=codec, use_dictionary=False), 0]
        typed_out[kind][1].write_batch(records)
        typed_out[kind][2] += records.num_rows

    def write_typed(lines: pa.RecordBatch) -> None:
        split = pc.is_null(lines.column("reject_reason"))
        valid = lines.filter(split)
        if valid.num_rows:
            records = typed.files.numbered(validate_batch(valid, spec), value_set)
            at = records.schema.get_field_index("raw_line")  # kept for the quarantine's records only
            records = records.set_column(at, "raw_line", pc.if_else(
                pc.is_null(records.column("reject_reason")), pa.scalar(None, pa.string()), records.column(at)))
            write_copy("typed", records)
        if valid.num_rows < lines.num_rows:
            rejects = lines.filter(pc.invert(split)).select([*LINEAGE, *REJECT_COLUMNS])
            write_copy("rejects", typed.files.numbered(rejects, value_set))

    for lines in _read_files(batches, spec):
        day = lines.column(0)[0].as_py().isoformat()  # a batch is one file's lines: one business date
        if day in open_files and open_files[day][2] >= max_rows:
            close(day)
        if day not in open_files:
            folder = f"business_date={day}"
            fs.create_dir(f"{base}/{folder}", recursive=True)
            rel = f"{folder}/part-{write_id}-{uuid.uuid4()}.c000.{codec}.parquet"
            open_files[day] = (rel, pq.ParquetWriter(f"{base}/{rel}", file_schema, filesystem=fs, compression=codec,
                                                     use_dictionary=dictionaries), 0)
        rel, writer, rows = open_files[day]
        columns = {name: lines.column(name) for name in lines.schema.names}
        columns["run_id"] = pa.repeat(pa.scalar(run_id, pa.string()), lines.num_rows)
        writer.write_batch(pa.RecordBatch.from_arrays([columns[f.name].cast(f.type) for f in file_schema],
                                                      schema=file_schema))
        open_files[day] = (rel, writer, rows + lines.num_rows)
        if typed is not None:
            write_typed(lines)
    for day in list(open_files):
        close(day)
    sizes = [fs.get_file_info(f"{base}/{rel}").size for rel, _, _ in written]
    paths, days, rows = [w[0] for w in written], [w[1] for w in written], [w[2] for w in written]
    kinds = ["bronze"] * len(written)
    for kind, (name, writer, count) in typed_out.items():
        writer.close()
        paths.append(name)
        days.append(None)
        sizes.append(0)
        rows.append(count)
        kinds.append(kind)
    yield pa.RecordBatch.from_arrays([
        pa.array(paths, pa.string()), pa.array(days, pa.string()), pa.array(sizes, pa.int64()),
        pa.array(rows, pa.int64()), pa.array(kinds, pa.string())], names=_WRITTEN_SCHEMA_NAMES)


def _remove_parts(root: str, days: list[date], write_id: str) -> None:
    """Delete the files a failed `write_bronze` job wrote (none of them is in the Delta log)."""
    from pyarrow import fs as pafs

    fs, base = resolve(root)
    for day in days:
        selector = pafs.FileSelector(f"{base}/business_date={day.isoformat()}", allow_not_found=True)
        for info in fs.get_file_info(selector):
            if info.base_name.startswith(f"part-{write_id}-"):
                fs.delete_file(info.path)


def write_bronze(spark: SparkSession, deliveries: list[Delivery], spec: FeedSpec, path: str, run_id: str,
                 typed: TypedCopy | None = None) -> TypedFiles | None:
    """Replace the deliveries' business dates in the bronze table at `path` with their lines, in
    one Delta commit (creating the table on its first write). With `typed`, the tasks also write
    the lines typed and the structurally rejected ones (`TypedCopy`); returns those files, or
    None when they were not written (no `typed`, or a table of an older layout).

    Spark tasks read, verify and split the files (`read_lines`) and write the Parquet files
    themselves, straight from Arrow; only the list of files written reaches the driver, which
    commits them through delta-rs. (Handing the lines to the JVM to write took four times as
    long.) A file failing its checks fails the job like `read_lines`: nothing is committed and the
    files the job wrote are deleted. A table written by an earlier version of the pipeline, with
    other columns, is written through Spark, which adds the missing ones.
    """
    from deltalake import Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    from crm_pipeline.io import delta, delta_rs

    days = sorted({d.business_date for d in deliveries})
    schema = _bronze_arrow_schema(spec)
    table = delta_rs.table(path)
    if table is not None and [(f.name, f.type) for f in pa.schema(table.schema().to_arrow())] != [
            (f.name, f.type) for f in schema]:
        from pyspark.sql import functions as F

        rows = read_lines(spark, deliveries, spec).select(
            *LINEAGE, *spec.field_names, F.lit(run_id).alias("run_id"), *REJECT_COLUMNS)
        delta.replace_where(rows, path, delta.in_predicate("business_date", days), ["business_date"],
                            optimize_write=False, merge_schema=True)
        return None
    files = _files(deliveries)
    write_id = uuid.uuid4().hex[:12]
    max_rows = int(spark.conf.get("spark.sql.files.maxRecordsPerFile", "0")) or 1 << 62
    codec = spark.conf.get("spark.sql.parquet.compression.codec", "snappy")
    root = _absolute(path)
    if typed is not None:
        typed = TypedCopy(_absolute(typed.folder), typed.files)
        clear(typed.folder)  # what a failed or killed load left
    written = []
    if files:
        tasks = spark.createDataFrame(_deal(spark, files).map(lambda f: tuple(f[k] for k in _FILE_FIELDS)),
                                      _FILES_SCHEMA)
        try:
            written = tasks.mapInArrow(
                lambda batches: _write_parts(batches, spec, root, write_id, run_id, max_rows, codec, typed),
                _WRITTEN_SCHEMA).collect()
        except BaseException:
            _remove_parts(root, days, write_id)
            if typed is not None:
                clear(typed.folder)
            raise
    copied = None
    if typed is not None:
        copied = TypedFiles(*[[f"{typed.folder}/{w.path}" for w in written if w.kind == kind]
                              for kind in ("typed", "rejects")])
    written = [w for w in written if w.kind == "bronze"]
    now = int(time.time() * 1000)
    adds = [AddAction(w.path, w.size, {"business_date": w.business_date}, now, True, json.dumps({"numRecords": w.rows}))
            for w in written]
    if table is None:
        create_table_with_add_actions(root, Schema.from_arrow(schema), adds, mode="error",
                                      partition_by=["business_date"])
    else:
        table.create_write_transaction(adds, mode="overwrite", schema=schema, partition_by=["business_date"],
                                       partition_filters=[("business_date", "in", [d.isoformat() for d in days])])
    delta_rs.keep_checkpoints(root)
    return copied


def _absolute(path: str) -> str:
    """`path` as the tasks must be given it: executors may run elsewhere, in another folder."""
    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def clear(folder: str) -> None:
    """Delete `folder` (a `TypedCopy` folder) and everything in it, if it exists."""
    from pyarrow import fs as pafs

    fs, base = resolve(folder)
    if fs.get_file_info(base).type != pafs.FileType.NotFound:
        fs.delete_dir(base)


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
