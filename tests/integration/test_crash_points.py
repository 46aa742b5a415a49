"""Crash safety inside the suite's time budget: the ingest and rollup fault points on a small
landing zone of two feeds, and the publish point on a copy of the session's warehouse.
(`test_crash_safety.py`, run by `make crash-test`, kills a whole month's pipeline at every point.)
"""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
from datetime import date

import duckdb
import pytest
from deltalake import DeltaTable

from crm_pipeline import ops
from crm_pipeline.generate import GeneratorConfig, generate
from crm_pipeline.ingest.load import ingest
from crm_pipeline.pipeline.rollups import build_daily_rollups
from crm_pipeline.settings import LakeLayout
from tests.integration.conftest import KEY, warehouse_tables
from tests.integration.test_crash_safety import _content, _crm, _tables, run_chain

pytestmark = [pytest.mark.spark, pytest.mark.integration]

FEEDS = "subscriber,cdr_voice"
CHAIN = [("ingest", "verify"), ("ingest", "bronze:2"), ("ingest", "silver:2"), ("ingest", None),
         ("rollup", "rollup"), ("rollup", None)]


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-points")
    landing = root / "landing"
    generate(GeneratorConfig(landing=landing, subscribers=30, start=date(2026, 2, 1), days=4, seed=13,
                             progress="none"))
    clean = LakeLayout(str(root / "clean" / "lake"))
    with contextlib.redirect_stdout(io.StringIO()):
        ingest(spark, landing, clean, ops.RunContext("clean"), feeds=FEEDS.split(","))
        build_daily_rollups(spark, clean, ops.RunContext("clean"), KEY)
    steps = run_chain(CHAIN, landing, root / "crashed",
                      lambda command: ["--feeds", FEEDS] if command == "ingest" else [])
    return dict(clean=root / "clean", crashed=root / "crashed", steps=steps)


def test_killed_ingest_and_rollups_rerun_to_the_uninterrupted_tables(runs):
    clean, crashed = _tables(runs["clean"] / "lake"), _tables(runs["crashed"] / "lake")
    assert set(crashed) == set(clean) >= {"bronze/cdr_voice", "silver/cdr_voice", "gold/daily_usage_by_subscriber",
                                          "gold/daily_contacts", "restricted/quarantine"}
    for name, path in clean.items():
        assert _content(DeltaTable(str(crashed[name])).to_pandas()) == _content(DeltaTable(str(path)).to_pandas()), name
    out = {(command, fault): proc.stdout for command, fault, proc in runs["steps"]}
    assert "data quality (run" not in out[("ingest", "silver:2")] and "data quality (run" in out[("ingest", None)]


def test_a_publish_killed_between_two_tables_leaves_the_previous_tables_whole(published, tmp_path):
    warehouse = tmp_path / "warehouse.duckdb"
    shutil.copy(published["warehouse"], warehouse)
    con = duckdb.connect(str(warehouse))
    con.execute('DELETE FROM "crm"."subscriber_month"')
    con.execute('DELETE FROM "crm"."kpi_month" WHERE month = DATE \'2026-02-01\'')
    con.close()
    before = warehouse_tables(warehouse)
    lake = shutil.copytree(published["lake"].root, tmp_path / "lake")  # publish records its run there
    killed = _crm("publish", None, tmp_path, "publish:3", ["--lake", str(lake)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "publish: crm.kpi_month" in killed.stdout  # two tables were replaced before the kill
    after_kill = warehouse_tables(warehouse)
    for name, table in before.items():  # rolled back: the deleted rows are still missing
        assert _content(after_kill[name]) == _content(table), name
    finished = _crm("publish", None, tmp_path, None, ["--lake", str(lake)])
    assert finished.returncode == 0, finished.stderr[-3000:]
    after = warehouse_tables(warehouse)
    for name, table in published["second"].items():
        assert _content(after[name]) == _content(table), name
