"""Idempotent Delta writes: replace exactly the partitions a run owns, atomically."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession


def exists(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def read(spark: SparkSession, path: str) -> DataFrame | None:
    """The table at `path`, or None before its first write."""
    return spark.read.format("delta").load(path) if exists(spark, path) else None


def sql_literal(value) -> str:
    if isinstance(value, date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


def in_predicate(column: str, values: Iterable) -> str:
    values = sorted(set(values))
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


def _writer(df: DataFrame, optimize_write: bool, merge_schema: bool):
    # Optimized writes bin-pack each partition value's rows into files of about
    # spark.databricks.delta.optimizeWrite.binSize, over as many tasks as that takes: no task gets a
    # whole partition value, and late records do not leave a small file per task and day.
    return (df.write.format("delta").option("mergeSchema", str(merge_schema).lower())
            .option("optimizeWrite", str(optimize_write).lower()))


def replace_where(df: DataFrame, path: str, predicate: str, partition_by: list[str],
                  optimize_write: bool = True, merge_schema: bool = False) -> None:
    """Replace the rows matching `predicate` with `df` in one transaction (creating the table if new).

    Every row of `df` must match the predicate (Delta enforces it). An empty `df` deletes the
    matching rows, which is what a re-delivery without those records means. `optimize_write=False`
    writes each task's rows as they are (for input that is already one partition value per task).
    `merge_schema` lets a write add columns (tables written by an older version gain them).
    """
    writer = _writer(df, optimize_write, merge_schema)
    if not exists(df.sparkSession, path):
        writer.mode("overwrite").partitionBy(*partition_by).save(path)
        return
    writer.mode("overwrite").option("replaceWhere", predicate).save(path)


def delete_where(spark: SparkSession, path: str, predicate: str) -> None:
    """Delete the rows matching `predicate` (one transaction; a predicate on partition columns only
    drops whole files without reading them). Nothing to do before the table's first write."""
    if exists(spark, path):
        DeltaTable.forPath(spark, path).delete(predicate)


def append(df: DataFrame, path: str, partition_by: list[str] | None = None, optimize_write: bool = False) -> None:
    """Append rows in one transaction (run logs; silver records new to the table)."""
    writer = _writer(df, optimize_write, False).mode("append")
    if partition_by and not exists(df.sparkSession, path):
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


def upsert(df: DataFrame, path: str, condition: str) -> None:
    """Merge `df` (alias `s`) into the table (alias `t`): matched rows are replaced, others inserted.

    Each target row may match at most one source row. One transaction; only files holding
    matched rows are rewritten.
    """
    from delta.tables import DeltaTable

    (DeltaTable.forPath(df.sparkSession, path).alias("t").merge(df.alias("s"), condition)
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
