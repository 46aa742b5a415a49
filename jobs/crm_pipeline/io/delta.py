"""Idempotent Delta writes: replace exactly the partitions a run owns, atomically."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline.io import delta_rs

#: `laid_out`: a partition value stays in the tasks that hold it when each task's file of it would
#: hold at least this many rows (some 10 MB of a CDR feed's Parquet)
MIN_FILE_ROWS = 250_000
#: `laid_out`: a gathered partition value gets a task (and a file) per this many of its rows
GATHERED_FILE_ROWS = 2_000_000


def exists(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def read(spark: SparkSession, path: str) -> DataFrame | None:
    """The table at `path`, or None before its first write."""
    return spark.read.format("delta").load(path) if exists(spark, path) else None


def sql_literal(value) -> str:
    """`value` as a literal of a Delta write's predicate, which Spark and delta-rs both parse (a
    quote doubled; Spark expressions built in Python: `columns.spark_sql_literal`)."""
    if isinstance(value, date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def in_predicate(column: str, values: Iterable) -> str:
    values = sorted(set(values))
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


def statistics_on(columns: Iterable[str]) -> dict[str, str]:
    """The table property that keeps Delta's per-file column statistics (minimum, maximum, null
    count) to `columns`; with none, each file records only its row count.

    Delta otherwise collects them for a table's first 32 columns on every write: about a fifth of
    the write of a day's CDRs (10 M records of 16 columns: 13.1-13.4 s against 10.0-10.5 s with
    one column), spent mostly on ids and free text whose files span every value, so no reader
    could skip a file by them. They serve data skipping only: a table's readers keep the columns
    they filter by, beyond its partition columns, which Delta prunes by without statistics."""
    columns = list(columns)
    if columns:
        return {"delta.dataSkippingStatsColumns": ",".join(columns)}
    return {"delta.dataSkippingNumIndexedCols": "0"}


def keep_properties(spark: SparkSession, path: str, properties: dict[str, str]) -> None:
    """Give the existing table at `path` the `properties` it lacks (one commit, only when one
    differs). A writer's `delta.*` options set them on a table it creates and are ignored after,
    so a table created before a property was chosen gets it here."""
    if not properties:
        return
    have = DeltaTable.forPath(spark, path).detail().select("properties").head()[0] or {}
    missing = {k: v for k, v in properties.items() if have.get(k) != v}
    if missing:
        settings = ", ".join(f"{sql_literal(k)} = {sql_literal(v)}" for k, v in sorted(missing.items()))
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({settings})")


def _writer(df: DataFrame, optimize_write: bool, merge_schema: bool, properties: dict[str, str] | None = None):
    # Optimized writes bin-pack each partition value's rows into files of about
    # spark.databricks.delta.optimizeWrite.binSize, over as many tasks as that takes: no task gets a
    # whole partition value, and late records do not leave a small file per task and day.
    writer = (df.write.format("delta").option("mergeSchema", str(merge_schema).lower())
              .option("optimizeWrite", str(optimize_write).lower()))
    for key, value in (properties or {}).items():  # table properties of a table the write creates
        writer = writer.option(key, value)
    return writer


def laid_out(df: DataFrame, column: str, rows_per_value: dict, spread_by: list[str]) -> DataFrame:
    """`df` arranged for a write without Delta's optimized-write shuffle (`optimize_write=False`),
    given how many of its rows each value of the partition `column` has.

    `df`'s rows must sit spread evenly over its tasks (hashed by a key, as after a deduplication),
    and be cheap to read again (cached): tasks merged for the write read theirs together.
    The values staying in place are written by as many of `df`'s tasks as the largest value fills
    with MIN_FILE_ROWS rows each (at most all of them): a value that gives each of those tasks at
    least MIN_FILE_ROWS rows stays where it is, `df`'s tasks merged into that many without a
    shuffle (`coalesce`), and each writes its file of it. The other values' rows are gathered by
    value, a value into one task per GATHERED_FILE_ROWS of its rows (split by `spread_by`'s hash),
    so that a few late records do not leave a small file per task and day. Only those rows are
    shuffled; an optimized write shuffles every row of the batch again (a day of a million
    subscribers' CDRs: a fifth of its silver write). A day that filled fewer than all tasks used to
    be gathered too: at a million subscribers the snapshot (1 M rows) and the SMS records (2 M)
    were each shuffled into one task, which wrote while the other core waited.
    """
    tasks = df.rdd.getNumPartitions()
    writers = max(1, min(tasks, max(rows_per_value.values(), default=0) // MIN_FILE_ROWS))
    in_place = sorted(v for v, n in rows_per_value.items() if n >= writers * MIN_FILE_ROWS)

    def merged(rows: DataFrame) -> DataFrame:
        return rows.coalesce(writers) if writers < tasks else rows

    if in_place and len(in_place) == len(rows_per_value):
        return merged(df)
    stays = F.coalesce(F.col(column).isin(in_place), F.lit(False))
    split = {v: -(-n // GATHERED_FILE_ROWS) for v, n in rows_per_value.items() if v not in in_place}
    by = [F.col(column)]
    if any(k > 1 for k in split.values()):
        tasks_of = F.create_map(*[F.lit(x) for v, k in split.items() if k > 1 for x in (v, k)])
        by.append(F.pmod(F.xxhash64(*spread_by), F.coalesce(tasks_of[F.col(column)], F.lit(1))))
    gathered = df.where(~stays).repartition(*by)
    return merged(df.where(stays)).unionByName(gathered) if in_place else gathered


def replace_where(df: DataFrame, path: str, predicate: str, partition_by: list[str],
                  optimize_write: bool = True, merge_schema: bool = False, record: dict | None = None,
                  properties: dict[str, str] | None = None, rows_at_most: int | None = None) -> None:
    """Replace the rows matching `predicate` with `df` in one transaction (creating the table if new).

    Every row of `df` must match the predicate (Delta enforces it). An empty `df` deletes the
    matching rows, which is what a re-delivery without those records means. `optimize_write=False`
    writes each task's rows as they are (for input that is already one partition value per task).
    `merge_schema` lets a write add columns (tables written by an older version gain them).
    `record` goes into the commit as its userMetadata (JSON; `delta_rs.write_records` reads it back).
    `properties`: table properties the table is given (`keep_properties`), e.g. `statistics_on`.
    `rows_at_most`: a bound on `df`'s rows, when the caller has one; within
    `delta_rs.LOCAL_WRITE_ROWS` (and with no columns or properties to add) the rows are collected
    and committed through delta-rs (`delta_rs.replace_table`), without a Spark write; none at all
    without a Spark job.
    """
    if rows_at_most is not None and rows_at_most <= delta_rs.LOCAL_WRITE_ROWS and not (merge_schema or properties):
        rows = (df if rows_at_most else df.limit(0)).toArrow()
        delta_rs.replace_table(path, rows, predicate, partition_by, record=record)
        return
    writer = _writer(df, optimize_write, merge_schema, properties)
    if record is not None:
        writer = writer.option("userMetadata", json.dumps(record))
    if not exists(df.sparkSession, path):
        writer.mode("overwrite").partitionBy(*partition_by).save(path)
        return
    keep_properties(df.sparkSession, path, properties)
    writer.mode("overwrite").option("replaceWhere", predicate).save(path)


def replace_schema(df: DataFrame, path: str, partition_by: list[str]) -> None:
    """Replace the whole table at `path` with `df`, whose columns may change type (one transaction;
    the table's properties stay). For a one-off rewrite of a table an earlier version wrote."""
    (df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").partitionBy(*partition_by)
     .save(path))


def append(df: DataFrame, path: str, partition_by: list[str] | None = None, optimize_write: bool = False,
           properties: dict[str, str] | None = None) -> None:
    """Append rows in one transaction (run logs; silver records new to the table)."""
    writer = _writer(df, optimize_write, False, properties).mode("append")
    if not exists(df.sparkSession, path):
        if partition_by:
            writer = writer.partitionBy(*partition_by)
    else:
        keep_properties(df.sparkSession, path, properties)
    writer.save(path)


def upsert(df: DataFrame, path: str, condition: str, properties: dict[str, str] | None = None) -> None:
    """Merge `df` (alias `s`) into the table (alias `t`): matched rows are replaced, others inserted.

    Each target row may match at most one source row. One transaction; only files holding
    matched rows are rewritten. `properties`: as for `replace_where`.
    """
    keep_properties(df.sparkSession, path, properties)
    (DeltaTable.forPath(df.sparkSession, path).alias("t").merge(df.alias("s"), condition)
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
