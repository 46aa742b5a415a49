"""Delta writes (io.delta): how many tasks an optimized write of many partition values takes."""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import functions as F

from crm_pipeline.io import delta
from crm_pipeline.spark import MAX_OPTIMIZED_WRITE_SHUFFLE


def _tasks_of(spark, group: str, action) -> int:
    """Tasks of every stage of the jobs `action` ran (Spark's status tracker, by job group)."""
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    tracker = sc.statusTracker()
    stages = {s for job in tracker.getJobIdsForGroup(group) for s in tracker.getJobInfo(job).stageIds}
    return sum(tracker.getStageInfo(s).numTasks for s in stages if tracker.getStageInfo(s))


def test_optimized_write_reducers_follow_the_sessions_shuffle_partitions(spark):
    assert spark.conf.get(MAX_OPTIMIZED_WRITE_SHUFFLE) == spark.conf.get("spark.sql.shuffle.partitions")


def test_an_optimized_write_of_many_small_partition_values_takes_few_tasks(spark, tmp_path):
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(60)]
    rows = spark.createDataFrame([(d, f"r{i}") for i, d in enumerate(days)], "day date, value string").repartition(2)
    path = str(tmp_path / "t")
    delta.replace_where(rows, path, delta.in_predicate("day", days), ["day"])  # creates the table

    tasks = _tasks_of(spark, "many-days", lambda: delta.replace_where(
        rows.withColumn("value", F.upper("value")), path, delta.in_predicate("day", days), ["day"]))

    # Delta's default hashes the rows into 2000 reducers: about one write task per day (60 here).
    assert tasks <= 30, tasks
    stored = spark.read.format("delta").load(path)
    assert sorted(r.value for r in stored.collect()) == sorted(f"R{i}" for i in range(60))
    files = spark.read.format("delta").load(path).inputFiles()
    assert len(files) == 60  # still one file per day
