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


def replace_where(df: DataFrame, path: str, predicate: str, partition_by: list[str]) -> None:
    """Replace the rows matching `predicate` with `df` in one transaction (creating the table if new).

    Every row of `df` must match the predicate (Delta enforces it). An empty `df` deletes the
    matching rows, which is what a re-delivery without those records means.
    """
    spark = df.sparkSession
    # Whole partitions per task: one file per partition value instead of one per task and value.
    writer = df.repartition(*partition_by).write.format("delta").option("mergeSchema", "false")
    if not exists(spark, path):
        writer.mode("overwrite").partitionBy(*partition_by).save(path)
        return
    writer.mode("overwrite").option("replaceWhere", predicate).save(path)


def append(df: DataFrame, path: str, partition_by: list[str] | None = None) -> None:
    """Append (ops history only: run logs gain the new run's rows)."""
    writer = df.write.format("delta").mode("append")
    if partition_by and not exists(df.sparkSession, path):
        writer = writer.partitionBy(*partition_by)
    writer.save(path)
