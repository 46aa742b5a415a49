"""The ops bookkeeping tables written and read through delta-rs: the delivery log, silver changes,
the rollup watermark and restatements, readable by Spark; a `crm rollup` with nothing pending
starts no Spark."""

from __future__ import annotations

import argparse
from datetime import date, datetime

import pytest

from crm_pipeline import ops
from crm_pipeline.entrypoints import steps
from crm_pipeline.io import delta_rs
from crm_pipeline.pipeline.monthly import fingerprint, fingerprints, record_inputs, record_restatements
from crm_pipeline.pipeline.rollups import pending_days, record_watermark
from crm_pipeline.settings import LakeLayout

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)


def test_the_latest_loaded_delivery_of_a_feed_day_is_the_loaded_one(tmp_path):
    lake = LakeLayout(str(tmp_path))
    assert ops.loaded_deliveries(lake) == {}
    ops.log_deliveries(lake, [("cdr_voice", D1, "first", "run-1", "LOADED"), ("bill", D1, "b", "run-1", "LOADED")])
    ops.log_deliveries(lake, [("cdr_voice", D1, "second", "run-2", "LOADED")])
    ops.log_deliveries(lake, [("cdr_voice", D1, "third", "run-3", "FAILED")])
    assert ops.loaded_deliveries(lake) == {("cdr_voice", D1): "second", ("bill", D1): "b"}


def test_pending_days_are_the_event_feeds_changes_after_the_watermark(tmp_path):
    lake = LakeLayout(str(tmp_path))
    assert pending_days(lake) == ([], None)
    ops.log_silver_changes(lake, "run-1", {"cdr_voice": {D2, D1}, "subscriber": {D3}})
    days, mark = pending_days(lake)
    assert days == [D1, D2] and mark is not None  # a snapshot change is no rollup day
    record_watermark(lake, mark, "run-1")
    assert pending_days(lake) == ([], None)
    ops.log_silver_changes(lake, "run-2", {"ticket": {D3}})
    days, later = pending_days(lake)
    assert days == [D3] and later > mark
    record_watermark(lake, later, "run-2")
    # a rebuild from a date (an HMAC key rotation): every event-feed day from it, changed or not
    assert pending_days(lake, rebuild_from=D2) == ([D2, D3], later)
    assert pending_days(lake, rebuild_from=D3 + (D3 - D2)) == ([], None)


def test_a_month_built_again_in_the_same_run_replaces_that_runs_inputs_of_the_month(tmp_path):
    """`crm run` (or the monthly DAG) rescores a month it built under the same run id: month_inputs
    keeps one row per run, month, feed and day (its key, which the PostgreSQL warehouse enforces),
    those of the later build; other months and other runs keep theirs."""
    lake = LakeLayout(str(tmp_path))
    may, june = date(2026, 5, 1), date(2026, 6, 1)
    loaded = {("bill", date(2026, 6, 2)): "bill-may", ("bill", date(2026, 7, 2)): "bill-june",
              ("cdr_voice", date(2026, 5, 31)): "voice-0531", ("cdr_voice", date(2026, 6, 30)): "voice-0630"}
    record_inputs(lake, ops.RunContext("run-1"), [may, june], loaded)
    record_inputs(lake, ops.RunContext("run-1"), [june], {**loaded, ("cdr_voice", date(2026, 6, 30)): "again"})
    record_inputs(lake, ops.RunContext("it's-2"), [june], loaded)
    rows = delta_rs.read(lake.ops("month_inputs")).to_pylist()
    keys = [(r["run_id"], r["month"], r["feed"], r["business_date"]) for r in rows]
    assert len(keys) == len(set(keys))
    got = {(r["run_id"], r["month"], r["business_date"]): r["delivery_id"] for r in rows}
    assert got[("run-1", june, date(2026, 6, 30))] == "again" and got[("it's-2", june, date(2026, 6, 30))] == "voice-0630"
    assert got[("run-1", may, date(2026, 5, 31))] == "voice-0531"
    assert {(run, month) for run, month, _ in got} == {("run-1", may), ("run-1", june), ("it's-2", june)}


def test_a_lake_holding_a_month_built_twice_in_one_run_publishes_one_row_per_key(tmp_path):
    """A lake written before the fix above holds both builds' rows of such a month: the publish
    sends the latest build's, once per key, which a warehouse enforcing the key accepts."""
    lake = LakeLayout(str(tmp_path / "lake"))
    june = date(2026, 6, 1)
    rows = [dict(run_id="run-1", month=june, feed="bill", business_date=date(2026, 7, 2), delivery_id=d,
                 built_at=datetime(2026, 7, 5, h)) for d, h in (("first", 1), ("second", 2))]
    ops.append_rows_arrow(lake, "month_inputs", rows[1:])  # as the older version appended them
    ops.append_rows_arrow(lake, "month_inputs", rows[:1])
    ops.append_rows_arrow(lake, "month_inputs", [dict(rows[0], run_id="run-2")])
    got = _published_ops(lake, tmp_path, "SELECT run_id, delivery_id FROM crm_ops.month_inputs ORDER BY 1")
    assert got == [("run-1", "second"), ("run-2", "first")]


def test_a_publish_retried_under_its_run_id_publishes_one_row_per_key_of_its_publications(tmp_path):
    """A publish retried under its run id (an Airflow retry) after it recorded its publications
    has them twice in the lake: the warehouse gets the latest of each key, which it accepts."""
    lake = LakeLayout(str(tmp_path / "lake"))
    row = dict(run_id="run-1", table_name="kpi_month", month=date(2026, 6, 1), rows=3, gold_version=4,
               warehouse="w", published_at=datetime(2026, 7, 5, 1))
    ops.append_rows_arrow(lake, "publications", [row])
    ops.append_rows_arrow(lake, "publications", [dict(row, gold_version=5, published_at=datetime(2026, 7, 5, 2))])
    assert _published_ops(lake, tmp_path, "SELECT run_id, gold_version FROM crm_ops.publications") == [("run-1", 5)]


def _published_ops(lake: LakeLayout, tmp_path, sql: str) -> list[tuple]:
    """`sql` on a DuckDB warehouse the lake's ops tables were just published to."""
    import duckdb

    from crm_pipeline.publish.publish import publish_ops

    wh = tmp_path / "wh.duckdb"
    publish_ops(lake, f"duckdb:///{wh}")
    con = duckdb.connect(str(wh), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_spark_reads_what_delta_rs_wrote(spark, tmp_path):
    lake = LakeLayout(str(tmp_path))
    ops.log_deliveries(lake, [("cdr_sms", D1, "d1", "run-1", "LOADED")])
    ops.log_silver_changes(lake, "run-1", {"cdr_sms": {D1}})
    ops.record_step(lake, ops.RunContext("run-1", task_id="rollup"), ops.utcnow(), "rebuilt 1 days")
    record_restatements(lake, [])  # nothing restated: no table
    assert not (tmp_path / "ops" / "restatements").exists()
    record_restatements(lake, [(D1, "kpi_month", "run-1", 3, 4, ops.utcnow())])
    rows = {name: spark.read.format("delta").load(lake.ops(name)).collect()
            for name in ("deliveries", "silver_changes", "pipeline_runs", "restatements")}
    assert [(r.feed, r.business_date, r.delivery_id) for r in rows["deliveries"]] == [("cdr_sms", D1, "d1")]
    assert [(r.feed, r.partition_date) for r in rows["silver_changes"]] == [("cdr_sms", D1)]
    assert [(r.task_id, r.message) for r in rows["pipeline_runs"]] == [("rollup", "rebuilt 1 days")]
    assert [(r.month, r.table_name, r.previous_rows, r.new_rows) for r in rows["restatements"]] == [
        (D1, "kpi_month", 3, 4)]


def test_a_rollup_with_nothing_pending_starts_no_spark(tmp_path, monkeypatch, capsys):
    lake = LakeLayout(str(tmp_path))
    ops.log_silver_changes(lake, "run-1", {"cdr_voice": {D1}})
    record_watermark(lake, pending_days(lake)[1], "run-1")

    def no_spark(*_):
        raise AssertionError("a rollup with nothing to do asked for a Spark session")

    monkeypatch.setattr(steps, "spark_session", no_spark)
    monkeypatch.setenv("CRM_MSISDN_HMAC_KEY", "unit-test-key")
    args = argparse.Namespace(lake=str(tmp_path), demo_key=False, verbose=False, run_id=None, dag_id="cli",
                              task_id=None, rebuild_from=None)
    assert steps.rollup(args) == 0
    assert "rollups: no changed days" in capsys.readouterr().out
    ops.log_silver_changes(lake, "run-2", {"cdr_voice": {D2}})
    with pytest.raises(AssertionError, match="asked for a Spark session"):
        steps.rollup(args)


def test_a_restatement_fingerprint_ignores_floating_point_noise_not_changes(spark):
    """Sums of doubles depend on Spark's order of addition: a difference in the last bits is not a
    restatement; a changed value, a changed string or a missing row is."""
    rows = [(D1, "A", 0.1 + 0.2, 3), (D1, "B", 1 / 3, 4)]
    base = spark.createDataFrame(rows, "month date, k string, share double, n long")

    def variant(change):
        return spark.createDataFrame([change(r) for r in rows], base.schema)

    noise = variant(lambda r: (*r[:2], r[2] * (1 + 1e-13), r[3]))
    assert fingerprints(noise) == fingerprints(base) and fingerprint(noise) == fingerprint(base)
    for changed in (variant(lambda r: (*r[:2], r[2] + 0.001, r[3])), variant(lambda r: (r[0], r[1] + "x", *r[2:])),
                    variant(lambda r: (*r[:3], r[3] + 1)), base.limit(1)):
        assert fingerprints(changed) != fingerprints(base) and fingerprint(changed) != fingerprint(base)


@pytest.mark.parametrize("writer", ["delta-rs", "Apache-Spark"])
def test_a_gold_marts_commits_record_the_fingerprints_a_rebuild_compares_with(spark, tmp_path, monkeypatch, writer):
    """Each write of a gold mart records the fingerprints of the months it wrote in its commit: a
    rebuild compares with those instead of reading the stored rows, they equal what the rows give,
    a maintenance commit leaves them standing, and a commit of another writer makes the months be
    read again. A small mart is committed through delta-rs, a large one through Spark (here: every
    mart, the limit set to 0), with the same record."""
    from delta.tables import DeltaTable

    from crm_pipeline.io import delta
    from crm_pipeline.pipeline.monthly import _replace_gold, stored_fingerprints

    monkeypatch.setattr(delta_rs, "LOCAL_WRITE_ROWS", 50_000 if writer == "delta-rs" else 0)
    lake = LakeLayout(str(tmp_path / "lake"))
    path = lake.gold("kpi_month")
    restated, unchanged = [], []

    def frame(rows):
        return spark.createDataFrame(rows, "month date, k string, share double")

    def build(df, months):
        _replace_gold(spark, lake, ops.RunContext("r1", task_id="analyse"), "kpi_month", df, months, False, False,
                      restated, unchanged, lambda _: None)

    def from_rows(months):
        return fingerprints(delta.read(spark, path).where(delta.in_predicate("month", months)))

    def written_by():
        return delta_rs.table(path).history(1)[0]["engineInfo"].split(":")[0].split("/")[0]

    build(frame([(D1, "a", 0.1), (D2, "b", 0.2)]), [D1, D2])  # the first write: the whole table
    assert written_by() == writer
    assert stored_fingerprints(path, [D1, D2, D3]) == {**from_rows([D1, D2]), D3: None}

    build(frame([(D2, "b", 0.3)]), [D2])  # D2 restated: its commit records D2 only
    assert written_by() == writer
    assert [(r[0], r[1]) for r in restated] == [(D2, "kpi_month")]
    assert stored_fingerprints(path, [D1, D2]) == from_rows([D1, D2])
    assert sorted(tuple(r) for r in delta.read(spark, path).collect()) == [(D1, "a", 0.1), (D2, "b", 0.3)]

    DeltaTable.forPath(spark, path).optimize().executeCompaction()  # maintenance: content as it was
    version = delta_rs.table(path).version()
    build(frame([(D1, "a", 0.1)]), [D1])  # same content as recorded: no new version
    assert unchanged == ["kpi_month"] and delta_rs.table(path).version() == version

    DeltaTable.forPath(spark, path).delete(f"month = DATE'{D1}'")  # another writer
    assert stored_fingerprints(path, [D1, D2]) == {}
    build(frame([(D1, "a", 0.1)]), [D1])  # read from the rows: D1 is empty now, so this is a write
    assert unchanged == ["kpi_month"] and delta_rs.table(path).version() == version + 2
    assert stored_fingerprints(path, [D1]) == from_rows([D1])
