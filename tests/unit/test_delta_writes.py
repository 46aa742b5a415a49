"""Delta writes: how many tasks an optimized write of many partition values takes (io.delta); bronze
written by the reading tasks and committed in one transaction (ingest.spark_io.write_bronze)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from crm_pipeline.feeds import load_feeds
from crm_pipeline.ingest.landing import discover
from crm_pipeline.ingest.spark_io import (
    TypedCopy, failed_check, read_lines, source_file, write_bronze,
)
from crm_pipeline.io import delta, delta_rs
from crm_pipeline.spark import MAX_OPTIMIZED_WRITE_SHUFFLE, OPTIMIZED_WRITE_BIN, session_conf
from crm_pipeline.transforms.staging.parse import LINEAGE, STRUCTURAL_SCHEMA, FileIndex, type_and_validate, typed_schema
from tests.conftest import shuffles, stages_run, write_delivery


def test_optimized_write_reducers_follow_the_sessions_shuffle_partitions(spark):
    assert spark.conf.get(MAX_OPTIMIZED_WRITE_SHUFFLE) == spark.conf.get("spark.sql.shuffle.partitions")


def test_one_large_partition_value_is_written_in_several_files(spark, tmp_path):
    """The session's bin (128 MiB unless deployed otherwise) splits a day's rows over tasks and
    files (bins of whole map outputs); shown with a bin of 1 MiB and a day of about 6 MiB from 8 tasks."""
    assert spark.conf.get(OPTIMIZED_WRITE_BIN) == "128"
    rows = spark.range(0, 60_000, 1, 8).select(F.lit(date(2026, 1, 1)).alias("day"),
                                               F.sha2(F.col("id").cast("string"), 512).alias("value"))
    path = str(tmp_path / "t")
    with session_conf(spark, {OPTIMIZED_WRITE_BIN: "1"}):
        delta.replace_where(rows, path, delta.in_predicate("day", [date(2026, 1, 1)]), ["day"])
    stored = spark.read.format("delta").load(path)
    assert len(stored.inputFiles()) >= 3  # a file per bin, each bin a task of its own
    assert stored.count() == 60_000


def test_an_optimized_write_of_many_small_partition_values_takes_few_tasks(spark, tmp_path):
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(60)]
    rows = spark.createDataFrame([(d, f"r{i}") for i, d in enumerate(days)], "day date, value string").repartition(2)
    path = str(tmp_path / "t")
    delta.replace_where(rows, path, delta.in_predicate("day", days), ["day"])  # creates the table

    tasks = sum(s.numTasks for s in stages_run(spark, lambda: delta.replace_where(
        rows.withColumn("value", F.upper("value")), path, delta.in_predicate("day", days), ["day"])))

    # Delta's default hashes the rows into 2000 reducers: about one write task per day (60 here).
    assert tasks <= 30, tasks
    stored = spark.read.format("delta").load(path)
    assert sorted(r.value for r in stored.collect()) == sorted(f"R{i}" for i in range(60))
    files = spark.read.format("delta").load(path).inputFiles()
    assert len(files) == 60  # still one file per day


D1, D2 = date(2026, 3, 1), date(2026, 3, 2)
PLANS = ["P1|GOTONE 58|POSTPAID|5800|300|100|20480|5G", "P2|EASYOWN 18|PREPAID|1800|50|30|1024|4G"]


def _bronze(path: str) -> list[tuple]:
    rows = DeltaTable(path).to_pyarrow_table().to_pylist()
    return sorted((r["business_date"], r["source_file"][-7:], r["line_no"], r["plan_id"], r["reject_reason"],
                   r["run_id"]) for r in rows)


def _data_files(path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*.parquet") if "_delta_log" not in p.parts}


def test_bronze_is_written_by_the_reading_tasks_in_one_commit_and_a_failed_file_leaves_nothing(spark, tmp_path,
                                                                                               monkeypatch):
    monkeypatch.setattr(delta_rs, "CHECKPOINT_INTERVAL", 1)  # a checkpoint from version 1 on
    spec, landing, path = load_feeds()["plan"], tmp_path / "landing", tmp_path / "bronze"
    write_delivery(landing, "plan", D1, [PLANS, ["P3|broken"]])
    write_delivery(landing, "plan", D2, [PLANS[:1]])
    write_bronze(spark, discover(landing, ["plan"]), spec, str(path), "run-1")
    assert DeltaTable(str(path)).version() == 0
    assert _bronze(str(path)) == [(D1, "001.dat", 1, "P1", None, "run-1"), (D1, "001.dat", 2, "P2", None, "run-1"),
                                  (D1, "002.dat", 1, None, "field_count", "run-1"),
                                  (D2, "001.dat", 1, "P1", None, "run-1")]
    assert _data_files(path) == {f.removeprefix(f"{path}/") for f in DeltaTable(str(path)).file_uris()}
    # dictionaries for the columns of few values only (a file's lineage, codes), not for ids or amounts
    columns = pq.ParquetFile(next(iter(DeltaTable(str(path)).file_uris()))).metadata.row_group(0)
    encodings = {columns.column(i).path_in_schema: columns.column(i).encodings for i in range(columns.num_columns)}
    assert [c for c, e in encodings.items() if "RLE_DICTIONARY" in e] == [
        "delivery_id", "source_file", "payment_type", "network_gen", "run_id", "reject_reason"]
    # Spark reads what the tasks wrote, as it reads its own writes
    assert spark.read.format("delta").load(str(path)).where("business_date = DATE'2026-03-01'").count() == 3

    # a re-delivery of D2 whose control line declares a row more than its file holds, which shows only
    # once the file is read (its lines already written by then): nothing commits, no file stays
    d2 = write_delivery(landing, "plan", D2, [PLANS])
    ctl = d2 / "PLAN_20260302.ctl"
    name, rows, rest = ctl.read_text().split("|", 2)
    ctl.write_text(f"{name}|{int(rows) + 1}|{rest}")
    with pytest.raises(Exception) as failed:
        write_bronze(spark, discover(landing, ["plan"], D2, D2), spec, str(path), "run-2")
    assert failed_check(failed.value)["file"] == "PLAN_20260302_001.dat"
    assert DeltaTable(str(path)).version() == 0
    assert _data_files(path) == {f.removeprefix(f"{path}/") for f in DeltaTable(str(path)).file_uris()}

    # a valid re-delivery replaces D2 only
    write_delivery(landing, "plan", D2, [PLANS[1:]])
    write_bronze(spark, discover(landing, ["plan"], D2, D2), spec, str(path), "run-3")
    assert _bronze(str(path)) == [(D1, "001.dat", 1, "P1", None, "run-1"), (D1, "001.dat", 2, "P2", None, "run-1"),
                                  (D1, "002.dat", 1, None, "field_count", "run-1"),
                                  (D2, "001.dat", 1, "P2", None, "run-3")]
    assert (path / "_delta_log" / "00000000000000000001.checkpoint.parquet").is_file()
    assert spark.read.format("delta").load(str(path)).count() == 4  # Spark reads the checkpoint


def test_the_reading_tasks_type_the_records_as_bronze_would_be_typed_and_a_failed_file_leaves_none(spark, tmp_path):
    """`TypedCopy`: what the silver stage starts from, typed while the files are read, equals the
    typing of the bronze rows written (raw lines kept for rejected records only); the lines that
    did not split are copied apart, as bronze holds them."""
    spec, landing, path = load_feeds()["plan"], tmp_path / "landing", str(tmp_path / "bronze")
    write_delivery(landing, "plan", D1, [PLANS + ["P9|SMALL|PREPAID|5x0|50|30|1024|4G"], ["P3|broken"]])
    write_delivery(landing, "plan", D2, [PLANS[:1]])
    deliveries = discover(landing, ["plan"])
    files = FileIndex((source_file(d, e.file_name), d.delivery_id) for d in deliveries for e in d.entries)
    copy = TypedCopy(str(tmp_path / "typed"), files)
    copied = write_bronze(spark, deliveries, spec, path, "run-1", copy)
    got = spark.read.schema(typed_schema(spec, numbered=True)).parquet(*copied.records).collect()
    bronze = spark.read.format("delta").load(path)
    expected = type_and_validate(bronze.where("reject_reason IS NULL"), spec, files).withColumn(
        "raw_line", F.when(F.col("reject_reason").isNotNull(), F.col("raw_line"))).collect()
    assert sorted(got) == sorted(expected) and len(got) == 4
    assert [(r.plan_id, r.reject_reason, r.raw_line) for r in got if r.reject_reason] == [
        ("P9", "bad_number", "P9|SMALL|PREPAID|5x0|50|30|1024|4G")]
    rejects = spark.read.schema(STRUCTURAL_SCHEMA).parquet(*copied.rejects).select(
        *files.lineage(), "raw_line", "reject_reason", "reject_detail").collect()
    assert rejects == bronze.where("reject_reason IS NOT NULL").select(
        *LINEAGE, "raw_line", "reject_reason", "reject_detail").collect()
    assert [(r.source_file, r.line_no, r.raw_line, r.reject_reason) for r in rejects] == [
        ("plan/20260301/PLAN_20260301_002.dat", 1, "P3|broken", "field_count")]

    d2 = write_delivery(landing, "plan", D2, [PLANS])  # a row more declared than delivered: fails once read
    ctl = d2 / "PLAN_20260302.ctl"
    name, rows, rest = ctl.read_text().split("|", 2)
    ctl.write_text(f"{name}|{int(rows) + 1}|{rest}")
    with pytest.raises(Exception):
        write_bronze(spark, discover(landing, ["plan"], D2, D2), spec, path, "run-2", copy)
    assert not (tmp_path / "typed").exists()


def test_a_bronze_table_of_an_earlier_version_gains_the_columns_it_lacks(spark, tmp_path):
    spec, landing, path = load_feeds()["plan"], tmp_path / "landing", str(tmp_path / "bronze")
    write_delivery(landing, "plan", D1, [PLANS])
    old = read_lines(spark, discover(landing, ["plan"]), spec).select(*LINEAGE, *spec.field_names)  # no run_id, rejects
    delta.replace_where(old, path, "business_date = DATE'2026-03-01'", ["business_date"], optimize_write=False)
    write_delivery(landing, "plan", D2, [PLANS[:1]])
    write_bronze(spark, discover(landing, ["plan"], D2, D2), spec, path, "run-2")
    assert _bronze(path) == [(D1, "001.dat", 1, "P1", None, None), (D1, "001.dat", 2, "P2", None, None),
                             (D2, "001.dat", 1, "P1", None, "run-2")]


def test_a_relative_bronze_path_means_the_same_folder_to_the_driver_and_the_tasks(spark, tmp_path, monkeypatch):
    spec = load_feeds()["plan"]
    write_delivery(tmp_path / "landing", "plan", D1, [PLANS])
    monkeypatch.chdir(tmp_path)  # the driver's folder; Spark's Python workers keep the one they started in
    write_bronze(spark, discover(tmp_path / "landing", ["plan"]), spec, "lake/bronze", "run-1")
    assert _bronze(str(tmp_path / "lake" / "bronze")) == [(D1, "001.dat", 1, "P1", None, "run-1"),
                                                          (D1, "001.dat", 2, "P2", None, "run-1")]


def test_shuffle_partitions_follow_the_stored_bytes_of_the_input(spark, tmp_path):
    """`delta_rs.partition_bytes` sums the files of the asked partition values (as on disk);
    `partitions_for` gives one partition per advisory size of them, never fewer than the session's."""
    import os

    import pyarrow as pa
    from deltalake import write_deltalake

    from crm_pipeline.io import delta_rs
    from crm_pipeline.spark import partitions_for

    path = str(tmp_path / "t")
    days = [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]
    for k in range(2):  # two files in each partition
        write_deltalake(path, pa.table({"d": days, "x": [k, 2 * k, 3 * k]}), partition_by=["d"], mode="append")

    def on_disk(day):
        folder = tmp_path / "t" / f"d={day}"
        return sum(os.path.getsize(folder / f) for f in os.listdir(folder))

    assert delta_rs.partition_bytes(path, "d", days[:2]) == on_disk(days[0]) + on_disk(days[1]) > 0
    assert delta_rs.partition_bytes(path, "d", [date(2025, 1, 1)]) == 0
    assert delta_rs.partition_bytes(str(tmp_path / "none"), "d", days) == 0
    target = spark.sparkContext._jvm.org.apache.spark.network.util.JavaUtils.byteStringAsBytes(
        spark.conf.get("spark.sql.adaptive.advisoryPartitionSizeInBytes"))
    session = int(spark.conf.get("spark.sql.shuffle.partitions"))
    assert partitions_for(spark, 0) == partitions_for(spark, target) == session
    assert partitions_for(spark, (session + 5) * target + 1) == session + 6


def test_a_frame_persisted_inside_uncompressed_cache_is_cached_plain(spark):
    """Spark reads the compression setting when `persist` is called; the session's own setting is
    back afterwards."""
    from crm_pipeline.spark import CACHE_COMPRESSED, uncompressed_cache

    def stored() -> int:  # every cache of the session, in memory or on disk
        return sum(i.memSize() + i.diskSize() for i in spark.sparkContext._jsc.sc().getRDDStorageInfo())

    def cached_bytes(plain: bool) -> int:
        before = stored()
        frame = spark.range(200_000).select(F.lit("the same long text on every row").alias("t"))
        if plain:
            with uncompressed_cache(spark):
                frame = frame.persist()
        else:
            frame = frame.persist()
        try:
            frame.count()
            return stored() - before
        finally:
            frame.unpersist(blocking=True)

    setting = spark.conf.get(CACHE_COMPRESSED)
    compressed, plain = cached_bytes(False), cached_bytes(True)
    assert plain > 10 * compressed > 0
    assert spark.conf.get(CACHE_COMPRESSED) == setting


def _files_per_value(spark, path: str) -> dict[str, int]:
    files: dict[str, int] = defaultdict(int)
    for f in spark.read.format("delta").load(path).inputFiles():
        files[f.split("event_date=")[1][:10]] += 1
    return dict(files)


def test_laid_out_keeps_a_large_partition_value_in_place_and_gathers_the_small_ones(spark, tmp_path, monkeypatch):
    """Rows spread by key over 4 tasks: the day with enough rows for a file per task is not shuffled;
    each late day is gathered into one task (one file), a large gathered day into one per
    GATHERED_FILE_ROWS; every row is written once."""
    monkeypatch.setattr(delta, "MIN_FILE_ROWS", 1_000)
    monkeypatch.setattr(delta, "GATHERED_FILE_ROWS", 1_500)
    day, late1, late2, big = date(2026, 3, 2), date(2026, 3, 1), date(2026, 2, 28), date(2026, 2, 27)
    sizes = {day: 8_000, late1: 30, late2: 5, big: 3_500}  # big: fewer than 4 x 1,000, so gathered
    rows = [(d, f"k{d}{i}") for d, n in sizes.items() for i in range(n)]
    df = spark.createDataFrame(rows, "event_date date, key string").repartition(4, "key").cache()  # as silver's
    df.count()
    out = delta.laid_out(df, "event_date", sizes, ["key"])
    assert shuffles(out) == 1  # the gathered rows only
    path = str(tmp_path / "t")
    # without merging the shuffle's small partitions (the test's rows are few), as a cluster's
    # gathered values of GATHERED_FILE_ROWS each are not merged
    with session_conf(spark, {"spark.sql.adaptive.coalescePartitions.enabled": "false"}):
        delta.replace_where(out, path, delta.in_predicate("event_date", sizes), ["event_date"], optimize_write=False)
    stored = spark.read.format("delta").load(path)
    files = _files_per_value(spark, path)
    assert (files[day.isoformat()], files[late1.isoformat()], files[late2.isoformat()]) == (4, 1, 1)
    assert 2 <= files[big.isoformat()] <= 3  # 3 buckets, unless two hash to one task
    assert sorted(map(tuple, stored.collect())) == sorted(rows)
    everything_in_place = delta.laid_out(df.where(F.col("event_date") == day), "event_date", {day: 8_000}, ["key"])
    assert shuffles(everything_in_place) == 0
    assert shuffles(df.repartition("event_date")) == 1
    df.unpersist()


def test_laid_out_merges_the_tasks_of_days_that_fill_fewer_than_all_without_a_shuffle(spark, tmp_path, monkeypatch):
    """Rows spread by key over 4 tasks, files of at least 1,000 rows: the largest day (2,500) fills
    2 tasks' files, so it and a day of 2,100 stay where they are, the 4 tasks merged into 2 with no
    shuffle (a file of each day per task); a day of 1,500 is gathered into one task. Alone, a day of
    1,500 is written by one task, still without a shuffle. Every row is written once."""
    monkeypatch.setattr(delta, "MIN_FILE_ROWS", 1_000)
    monkeypatch.setattr(delta, "GATHERED_FILE_ROWS", 2_000)
    day, late1, late2 = date(2026, 3, 2), date(2026, 3, 1), date(2026, 2, 28)
    sizes = {day: 2_500, late1: 2_100, late2: 1_500}
    rows = [(d, f"k{d}{i}") for d, n in sizes.items() for i in range(n)]
    df = spark.createDataFrame(rows, "event_date date, key string").repartition(4, "key").cache()  # as silver's
    df.count()
    out = delta.laid_out(df, "event_date", sizes, ["key"])
    assert shuffles(out) == 1  # the gathered day's rows only
    path = str(tmp_path / "t")
    with session_conf(spark, {"spark.sql.adaptive.coalescePartitions.enabled": "false"}):
        delta.replace_where(out, path, delta.in_predicate("event_date", sizes), ["event_date"], optimize_write=False)
    assert _files_per_value(spark, path) == {day.isoformat(): 2, late1.isoformat(): 2, late2.isoformat(): 1}
    assert sorted(map(tuple, spark.read.format("delta").load(path).collect())) == sorted(rows)

    alone = delta.laid_out(df.where(F.col("event_date") == late2), "event_date", {late2: 1_500}, ["key"])
    assert shuffles(alone) == 0
    one = str(tmp_path / "one")
    delta.replace_where(alone, one, delta.in_predicate("event_date", [late2]), ["event_date"], optimize_write=False)
    assert _files_per_value(spark, one) == {late2.isoformat(): 1}
    assert spark.read.format("delta").load(one).count() == 1_500
    df.unpersist()


def _file_stats(path: str) -> list[dict]:
    """The statistics each data file of the table's current version records, in the order added
    (from its Delta log's commits; a test table has no checkpoint)."""
    import json
    from pathlib import Path

    added: dict[str, dict] = {}
    for commit in sorted(Path(path, "_delta_log").glob("*.json")):
        for action in map(json.loads, commit.read_text().splitlines()):
            if "add" in action:
                added[action["add"]["path"]] = json.loads(action["add"]["stats"])
            elif "remove" in action:
                added.pop(action["remove"]["path"], None)
    return list(added.values())


def test_statistics_are_kept_to_the_columns_a_table_names_and_an_older_table_is_given_them(spark, tmp_path):
    """A table created with `statistics_on` records min/max/null counts for those columns only
    (none: row counts alone); a table created without it gets the property at its next write,
    whose files follow it, and a further write adds no property commit."""
    rows = spark.createDataFrame([(date(2026, 3, 1), f"id{i}", i) for i in range(10)],
                                 "day date, id string, n long").coalesce(1)  # a file per write
    days = delta.in_predicate("day", [date(2026, 3, 1)])

    named = str(tmp_path / "named")
    delta.replace_where(rows, named, days, ["day"], properties=delta.statistics_on(["n"]))
    assert [(s["numRecords"], s["minValues"], s["maxValues"]) for s in _file_stats(named)] == [(10, {"n": 0}, {"n": 9})]

    counts_only = str(tmp_path / "counts_only")
    delta.append(rows, counts_only, ["day"], properties=delta.statistics_on([]))
    assert [sorted(s) for s in _file_stats(counts_only)] == [["numRecords"]]

    older = str(tmp_path / "older")
    delta.replace_where(rows, older, days, ["day"])
    assert set(_file_stats(older)[0]["minValues"]) == {"id", "n"}  # Delta's default: every column
    delta.replace_where(rows, older, days, ["day"], properties=delta.statistics_on(["n"]))
    assert [s["minValues"] for s in _file_stats(older)] == [{"n": 0}]
    versions = DeltaTable(older).version()
    delta.append(rows, older, ["day"], properties=delta.statistics_on(["n"]))
    assert DeltaTable(older).version() == versions + 1  # the append alone
    assert [s["minValues"] for s in _file_stats(older)] == [{"n": 0}, {"n": 0}]
