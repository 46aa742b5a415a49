"""The embedded DuckDB warehouse adapter: atomic replaces, URL paths, owner-only restricted file."""

from __future__ import annotations

import stat
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from crm_pipeline.errors import UsageError
from crm_pipeline.publish.warehouse import WarehouseTarget, open_warehouse

JAN, FEB = date(2026, 1, 1), date(2026, 2, 1)


def test_urls_follow_sqlalchemy_slashes():
    assert WarehouseTarget("duckdb:///var/w.duckdb").duckdb_path == Path("var/w.duckdb")
    assert WarehouseTarget("duckdb:////tmp/w.duckdb").duckdb_path == Path("/tmp/w.duckdb")
    assert WarehouseTarget("duckdb:////tmp/w.duckdb").restricted_path == Path("/tmp/w_restricted.duckdb")
    with pytest.raises(UsageError, match="unsupported warehouse URL"):
        open_warehouse("mysql://x/y")


def test_republishing_a_month_replaces_it_and_keeps_the_others(tmp_path):
    wh = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    wh.replace_partitions("crm", "t", pa.table({"month": [JAN, FEB], "x": [1, 2]}), "month", [JAN, FEB])
    wh.replace_partitions("crm", "t", pa.table({"month": [FEB, FEB], "x": [5, 6]}), "month", [FEB])
    assert wh.query('SELECT month, x FROM "crm"."t" ORDER BY 1, 2') == [(JAN, 1), (FEB, 5), (FEB, 6)]


def test_a_failed_replace_leaves_the_previous_table_whole(tmp_path):
    wh = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    wh.replace_partitions("crm", "t", pa.table({"month": [JAN, FEB], "x": [1, 2]}), "month", [JAN, FEB])
    bad = pa.table({"month": [FEB], "x": ["not a number"]})
    with pytest.raises(Exception):
        wh.replace_partitions("crm", "t", bad, "month", [FEB])
    assert wh.query('SELECT month, x FROM "crm"."t" ORDER BY 1') == [(JAN, 1), (FEB, 2)]


def test_the_published_row_count_check_sees_inside_the_transaction(tmp_path):
    from crm_pipeline.ops import RunContext
    from crm_pipeline.publish.publish import _reconciled

    wh = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    data = pa.table({"month": [JAN, FEB, FEB], "x": [1, 2, 3]})
    with wh.transaction():
        wh.replace_partitions("crm", "t", data, "month", [JAN, FEB])
        good = _reconciled(wh, "crm", "t", "month", [JAN, FEB], data.num_rows, RunContext("r1"))
        wh._open.execute('INSERT INTO "crm"."t" VALUES (DATE \'2026-02-01\', 4)')  # a row gold never had
        bad = _reconciled(wh, "crm", "t", "month", [FEB], 2, RunContext("r1"))
    assert [(r["table_name"], r["check_name"], r["success"], r["unexpected_count"], r["severity"], r["run_id"])
            for r in good + bad] == [("published_t", "row_count_equals_gold", True, 0, "blocking", "r1"),
                                     ("published_t", "row_count_equals_gold", False, 1, "blocking", "r1")]


def test_a_write_leaving_two_rows_under_one_key_is_refused_and_rolled_back(tmp_path):
    """DuckDB tables carry no primary key: each write checks the key of its table's definition
    (over the whole table, or the partitions a partition replace wrote when the key holds the
    partition column) and is refused, as PostgreSQL's primary key refuses it, naming the table,
    the check and the key, never the values."""
    from datetime import datetime

    from crm_pipeline.publish.warehouse import KeyNotUnique

    wh = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    run = dict(run_id="r1", table_name="kpi_month", month=JAN, rows=3, gold_version=1, warehouse="w",
               published_at=datetime(2026, 2, 3, 4))
    wh.replace_table("crm_ops", "publications", pa.Table.from_pylist([run, dict(run, month=FEB)]))
    with pytest.raises(KeyNotUnique, match=r"^crm_ops\.publications: check key_unique failed: 1 keys "
                                           r"\(run_id, table_name, month\) held by 2 rows"):
        wh.replace_table("crm_ops", "publications", pa.Table.from_pylist([run, dict(run, rows=4)]))
    assert wh.query('SELECT month, "rows" FROM crm_ops.publications ORDER BY 1') == [(JAN, 3), (FEB, 3)]

    month = dict(top20_revenue_share=0.5, gini=0.4, subscribers=10, revenue_fen=100)
    wh.replace_partitions("crm", "revenue_concentration", pa.Table.from_pylist(
        [dict(month, month=JAN), dict(month, month=FEB)]), "month", [JAN, FEB])
    with pytest.raises(KeyNotUnique, match=r"^crm\.revenue_concentration: check key_unique failed: 1 keys \(month\)"):
        with wh.transaction():  # as a publish writes: every table of its months, or none
            wh.replace_table("crm_ops", "publications", pa.Table.from_pylist([dict(run, run_id="r2")]))
            wh.replace_partitions("crm", "revenue_concentration", pa.Table.from_pylist(
                [dict(month, month=FEB, subscribers=11), dict(month, month=FEB, subscribers=12)]), "month", [FEB])
    assert wh.query('SELECT month, subscribers FROM crm.revenue_concentration ORDER BY 1') == [(JAN, 10), (FEB, 10)]
    assert wh.query("SELECT DISTINCT run_id FROM crm_ops.publications") == [("r1",)]
    wh.replace_partitions("crm", "revenue_concentration", pa.Table.from_pylist([dict(month, month=FEB)]), "month",
                          [FEB])  # one row per key again: accepted


def test_restricted_schema_lives_in_an_owner_only_file(tmp_path):
    wh = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    wh.replace_table("crm_restricted", "contact", pa.table({"subscriber_id": ["S1"], "msisdn": ["13800000001"],
                                                            "customer_name": ["Li Lei"]}))
    assert stat.S_IMODE(wh.target.restricted_path.stat().st_mode) == 0o600
    assert wh.query('SELECT msisdn FROM "crm_restricted"."contact"', restricted=True) == [("13800000001",)]
    assert not wh.path.exists() or wh.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'crm_restricted'") == [(0,)]


_HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _hold(path: Path, seconds: float):
    """Another process holding the DuckDB file read-only (a BI tool) for `seconds`."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_publish_waits_for_a_reader_in_another_process_then_writes(tmp_path, caplog):
    import time

    wh = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    wh.replace_table("crm", "t", pa.table({"x": [1]}))
    reader = _hold(wh.path, 3)
    started = time.monotonic()
    with caplog.at_level("WARNING"):
        wh.replace_table("crm", "t", pa.table({"x": [2]}))
    assert time.monotonic() - started > 1  # it waited for the reader
    assert reader.wait() == 0 and wh.query('SELECT x FROM crm.t') == [(2,)]
    assert "waiting for warehouse file" in caplog.text and str(wh.path) in caplog.text


def test_a_lock_held_too_long_fails_naming_the_file_and_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_WAREHOUSE_LOCK_WAIT", "1")
    wh = open_warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    wh.replace_table("crm", "t", pa.table({"x": [1]}))
    reader = _hold(wh.path, 30)
    try:
        with pytest.raises(RuntimeError, match="CRM_WAREHOUSE_LOCK_WAIT") as err:
            wh.replace_table("crm", "t", pa.table({"x": [2]}))
        assert str(wh.path) in str(err.value)
    finally:
        reader.kill()
        reader.wait()
    assert wh.query('SELECT x FROM crm.t') == [(1,)]


def test_the_embedded_warehouse_has_the_bi_views_of_its_tables(tmp_path):
    rows = [dict(month=m, dimension="ALL", dimension_value="ALL", active_subscribers=10, opening_subscribers=10,
                 closing_subscribers=10, gross_adds=0, churned_subscribers=1, churn_rate=c, revenue_fen=1000,
                 arpu_fen=a, voice_mou_per_sub=1.0, data_mb_per_sub=2.0) for m, a, c in ((JAN, 100.0, 0.1),
                                                                                        (FEB, 110.0, 0.05))]
    wh = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    wh.replace_partitions("crm", "kpi_month", pa.Table.from_pylist(rows), "month", [JAN, FEB])
    assert wh.create_views() == ["crm.kpi_trend"]
    (jan, feb) = wh.query("SELECT month, prev_arpu_fen, arpu_change FROM crm.kpi_trend ORDER BY month")
    assert jan == (JAN, None, None) and feb[:2] == (FEB, 100.0) and feb[2] == pytest.approx(0.1)
    assert wh.query("SELECT comment FROM duckdb_tables() WHERE table_name = 'kpi_month'")[0][0].startswith("Counts")


def test_the_publish_stream_reads_a_partitioned_table_row_group_by_row_group(tmp_path):
    """`publish.stream` yields exactly the rows a whole-table read gives (partition columns included,
    the filter applied), in batches no larger than a row group."""
    import pyarrow.dataset as ds

    from crm_pipeline.publish.publish import stream

    rows = 2_500
    table = pa.table({"month": [JAN if i % 3 else FEB for i in range(rows)], "x": list(range(rows)),
                      "s": [f"r{i}" for i in range(rows)]})
    by_month = ds.partitioning(pa.schema([("month", pa.date32())]), flavor="hive")
    ds.write_dataset(table, tmp_path / "t", format="parquet", partitioning=by_month, max_rows_per_group=400,
                     min_rows_per_group=400)
    dataset = ds.dataset(tmp_path / "t", format="parquet", partitioning=by_month)
    where = ds.field("month") == pa.scalar(JAN, pa.date32())
    reader = stream(dataset, ["x", "month"], where)
    batches = list(reader)
    assert reader.schema.names == ["x", "month"]
    assert max(b.num_rows for b in batches) <= 400 and len(batches) > 1
    got = pa.Table.from_batches(batches, reader.schema).sort_by("x")
    assert got.equals(dataset.to_table(columns=["x", "month"], filter=where).sort_by("x"))
    assert got.num_rows == sum(1 for i in range(rows) if i % 3)
