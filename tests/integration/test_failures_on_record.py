"""Every failed task is on record: a blocking gold check stops `crm analyse` before it writes
anything, with every suite's results and a FAILED run row in crm_ops; a crash inside `crm run`
publishes crm_ops (and nothing else) so the warehouse shows it; a publish killed midway leaves
the previous tables whole."""

from __future__ import annotations

import contextlib
import shutil
import signal
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from deltalake import DeltaTable

from crm_pipeline import cli, ops
from crm_pipeline.entrypoints.run import run_pipeline
from crm_pipeline.errors import EXIT_FAILED, EXIT_OK, TaskFailed
from crm_pipeline.pipeline.churn import MODEL_TABLES
from crm_pipeline.pipeline.marts import MART_TABLES
from crm_pipeline.quality import gx
from crm_pipeline.settings import LakeLayout
from tests.integration.conftest import KEY, LAST_DAY, warehouse_tables
from tests.integration.crash import content, crm

pytestmark = [pytest.mark.spark, pytest.mark.integration]

IMPOSSIBLE = {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 0, "max_value": 0},
              "meta": {"severity": "blocking"}}


@pytest.fixture
def lake_copy(published, tmp_path):
    shutil.copytree(published["lake"].root, tmp_path / "lake")
    return LakeLayout(str(tmp_path / "lake"))


def _rows(path: str, run_id: str) -> list[dict]:
    return [r for r in DeltaTable(path).to_pyarrow_table().to_pylist() if r["run_id"] == run_id]


def _as_built(spark, lake: LakeLayout, months: list[date], *args, **kwargs) -> dict:
    """Stands in for `monthly.build_months`: the months' marts as the session's run built them (its
    gold, every mart read back for those months). The test is about what a blocking check does
    with a month's marts, not about building them: every run of the suite builds them for real."""
    from pyspark.sql import functions as F

    from crm_pipeline.feeds import table_spec

    return {name: spark.read.format("delta").load(lake.gold(name)).where(F.col(table_spec(name).partition).isin(months))
            for name in MART_TABLES}


def test_a_blocking_gold_check_writes_no_gold_and_puts_every_result_on_record(lake_copy, tmp_path, monkeypatch,
                                                                              capsys):
    from crm_pipeline.pipeline import monthly

    monkeypatch.setattr(monthly, "build_months", _as_built)
    real = gx.load_suite_definition
    suite = real("gold_kpi_month")
    failing = dict(suite, expectations=[*suite["expectations"], IMPOSSIBLE])
    monkeypatch.setattr(gx, "load_suite_definition", lambda t: failing if t == "gold_kpi_month" else real(t))
    monkeypatch.setenv("CRM_MSISDN_HMAC_KEY", KEY)
    versions = {n: DeltaTable(lake_copy.gold(n)).version() for n in MART_TABLES}

    code = cli.main(["analyse", "--lake", lake_copy.root, "--month", "2026-02-01", "--run-id", "dq-1"])

    assert code == EXIT_FAILED
    assert "gold_kpi_month: expect_table_row_count_to_be_between" in capsys.readouterr().err
    assert {n: DeltaTable(lake_copy.gold(n)).version() for n in MART_TABLES} == versions
    [run] = _rows(lake_copy.ops("pipeline_runs"), "dq-1")
    assert run["status"] == "FAILED" and run["task_id"] == "analyse"
    assert run["message"].startswith("analyse failed: blocking data-quality checks failed: gold_kpi_month: ")
    dq = _rows(lake_copy.ops("data_quality"), "dq-1")
    assert {r["table_name"] for r in dq} == {f"gold_{n}" for n in MART_TABLES} | {"gold_reconciliation"}
    assert [(r["table_name"], r["check_name"]) for r in dq if not r["success"]] == [
        ("gold_kpi_month", "expect_table_row_count_to_be_between")]

    # the next publish brings the failure to the warehouse's crm_ops, next to its own SUCCESS row
    wh = tmp_path / "wh.duckdb"
    assert cli.main(["publish", "--lake", lake_copy.root, "--warehouse", f"duckdb:///{wh}",
                     "--run-id", "pub-1"]) == EXIT_OK
    con = duckdb.connect(str(wh), read_only=True)
    runs = dict(con.execute("SELECT run_id, status FROM crm_ops.pipeline_runs "
                            "WHERE run_id IN ('dq-1', 'pub-1')").fetchall())
    checks = con.execute("SELECT count(*) FROM crm_ops.data_quality WHERE run_id = 'dq-1' AND NOT success").fetchone()
    con.close()
    assert runs == {"dq-1": "FAILED", "pub-1": "SUCCESS"} and checks == (1,)


def test_analysing_a_named_month_that_is_not_complete_fails_and_says_what_it_waits_for(lake_copy, monkeypatch,
                                                                                       capsys):
    """A scheduled run names its month (the monthly DAG's --require-month): if the month is not
    complete it must fail (and be retried), not pass with nothing built; it finds out from the
    delivery log and silver bill's Delta log, before it starts Spark."""
    monkeypatch.setenv("CRM_MSISDN_HMAC_KEY", KEY)
    monkeypatch.setattr("crm_pipeline.entrypoints.steps.spark_session",
                        lambda *a: pytest.fail("Spark started for a month that is not complete"))
    versions = {n: DeltaTable(lake_copy.gold(n)).version() for n in MART_TABLES}
    code = cli.main(["analyse", "--lake", lake_copy.root, "--require-month", "2026-07-01", "--run-id", "early-1"])
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert LAST_DAY == date(2026, 7, 4)
    assert "2026-07 is not complete: bill not delivered; 2026-07-05..2026-08-03 not loaded (every daily feed)" in err
    assert {n: DeltaTable(lake_copy.gold(n)).version() for n in MART_TABLES} == versions
    [run] = _rows(lake_copy.ops("pipeline_runs"), "early-1")
    assert run["status"] == "FAILED" and "2026-07 is not complete" in run["message"]


def test_a_rescore_with_nothing_to_rescore_says_so_on_record_without_starting_spark(lake_copy, monkeypatch, capsys):
    """The monthly DAG's rescore task after a train that fitted nothing: the registry and gold
    subscriber_month (read through delta-rs) show every month scored by its newest honest model."""
    monkeypatch.setenv("CRM_MSISDN_HMAC_KEY", KEY)
    monkeypatch.setattr("crm_pipeline.entrypoints.steps.spark_session",
                        lambda *a: pytest.fail("Spark started with nothing to rescore"))
    versions = {n: DeltaTable(lake_copy.gold(n)).version() for n in MART_TABLES}
    assert cli.main(["analyse", "--rescore", "--lake", lake_copy.root, "--run-id", "rescore-1"]) == EXIT_OK
    assert "nothing to rescore" in capsys.readouterr().out
    assert {n: DeltaTable(lake_copy.gold(n)).version() for n in MART_TABLES} == versions
    [run] = _rows(lake_copy.ops("pipeline_runs"), "rescore-1")
    assert (run["status"], run["message"]) == ("SUCCESS", "nothing to rescore")


def test_a_train_with_nothing_to_fit_says_so_on_record_without_starting_spark(lake_copy, monkeypatch, capsys):
    """The monthly DAG's train task when the months bring no new training window: gold
    subscriber_month (read through delta-rs), the registry and the model tables' last commits show
    there is nothing to fit and nothing to rewrite."""
    monkeypatch.setattr("crm_pipeline.entrypoints.steps.spark_session",
                        lambda *a: pytest.fail("Spark started with nothing to train"))
    versions = {n: DeltaTable(lake_copy.gold(n)).version() for n in MODEL_TABLES}
    assert cli.main(["train", "--lake", lake_copy.root, "--run-id", "train-1"]) == EXIT_OK
    assert "train: every training window has a model (1, spec " in capsys.readouterr().out  # the run fitted it
    assert {n: DeltaTable(lake_copy.gold(n)).version() for n in MODEL_TABLES} == versions
    [run] = _rows(lake_copy.ops("pipeline_runs"), "train-1")
    assert (run["status"], run["message"]) == ("SUCCESS", "trained 0 churn model(s)")


def test_a_crash_inside_crm_run_publishes_crm_ops_and_nothing_else(spark, published, lake_copy, tmp_path,
                                                                   monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("executor lost while reading subscriber 13800000001")

    monkeypatch.setattr("crm_pipeline.pipeline.monthly.analyse", crash)
    wh = tmp_path / "wh.duckdb"
    with pytest.raises(TaskFailed, match="analyse failed: RuntimeError: executor lost"):
        run_pipeline(spark, published["landing"], lake_copy, f"duckdb:///{wh}", ops.RunContext("crash-1"), KEY)

    con = duckdb.connect(str(wh), read_only=True)
    schemas = {r[0] for r in con.execute("SELECT DISTINCT table_schema FROM information_schema.tables").fetchall()}
    [(status, message)] = con.execute("SELECT status, message FROM crm_ops.pipeline_runs "
                                      "WHERE run_id = 'crash-1' AND status <> 'SUCCESS'").fetchall()
    con.close()
    assert schemas == {"crm_ops"}  # the crash stopped the run before anything of crm was published
    assert status == "FAILED" and "138******01" in message and "13800000001" not in message


def test_a_publish_killed_between_two_tables_leaves_the_previous_tables_whole(published, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(published["warehouse"], warehouse)
    con = duckdb.connect(str(warehouse))
    con.execute('DELETE FROM "crm"."subscriber_month"')
    con.execute('DELETE FROM "crm"."kpi_month" WHERE month = DATE \'2026-02-01\'')
    con.close()
    before = warehouse_tables(warehouse)
    lake = shutil.copytree(published["lake"].root, tmp_path / "lake")  # publish records its run there
    killed = crm("publish", None, tmp_path, "publish:3", ["--lake", str(lake)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "publish: crm.kpi_month" in killed.stdout  # two tables were replaced before the kill
    after_kill = warehouse_tables(warehouse)
    for name, table in before.items():  # rolled back: the deleted rows are still missing
        assert content(after_kill[name]) == content(table), name
    with _reading(warehouse) as seen:  # a BI tool polling the file through the publish
        finished = crm("publish", None, tmp_path, None, ["--lake", str(lake)])
    assert finished.returncode == 0, finished.stderr[-3000:]
    after = warehouse_tables(warehouse)
    for name, table in published["second"].items():
        assert content(after[name]) == content(table), name
    old, new = _state(before), _state(after)
    assert old != new and seen[0] == old and seen[-1] == new and set(seen) <= {old, new}, (old, new, set(seen))


_STATE_SQL = ('SELECT (SELECT count(*) FROM "crm"."subscriber_month"), '
              '(SELECT count(*) FROM "crm"."kpi_month" WHERE month = DATE \'2026-02-01\')')


def _state(tables: dict) -> tuple[int, int]:
    kpi = tables["kpi_month"]
    return len(tables["subscriber_month"]), int((pd.to_datetime(kpi["month"]) == "2026-02-01").sum())


@contextlib.contextmanager
def _reading(warehouse):
    """Read the warehouse over and over from another process while the block runs, one short
    read-only connection at a time, and list what each read saw: the publish must wait for the
    reader's lock, and the reader must see the old tables or the new ones, never a mix."""
    import subprocess
    import sys

    script = Path(__file__).with_name("warehouse_reader.py")
    reader = subprocess.Popen([sys.executable, str(script), str(warehouse), _STATE_SQL], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    seen: list[tuple[int, int]] = []
    first = reader.stdout.readline()
    seen.append(tuple(map(int, first.split())))
    try:
        yield seen
    finally:
        out, _ = reader.communicate("stop\n", timeout=120)
    seen += [tuple(map(int, line.split())) for line in out.splitlines()]
