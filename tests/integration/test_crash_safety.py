"""Crash safety: `crm` steps killed with SIGKILL at every named fault point (`crm_pipeline.faults`)
and run again end with every lake table and every warehouse table identical in content to an
uninterrupted `crm run`: nothing half-loaded, nothing counted twice, nothing lost.

One chain on a small generated month, each step in its own process as Airflow runs them: ingest
dies while a Spark task reads and verifies a file, again after a bronze commit, again after a
silver commit, then finishes; the rollups die between their two tables, then finish; analyse
dies between two gold marts, then finishes; publish dies between two tables of its transaction,
then finishes. Each kill takes the whole process group (driver, JVM, Python workers), like a
lost machine.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from deltalake import DeltaTable

from crm_pipeline import ops
from crm_pipeline.entrypoints.run import run_pipeline
from crm_pipeline.generate import GeneratorConfig, generate
from crm_pipeline.quality import gx
from crm_pipeline.settings import LakeLayout
from tests.integration.conftest import KEY, warehouse_tables

# The whole chain takes about 14 minutes on 2 cores: `make crash-test` runs it. The suite's
# share of it (ingest, rollups, publish) is tests/integration/test_crash_points.py.
pytestmark = [pytest.mark.spark, pytest.mark.integration, pytest.mark.crash]

#: the chain of `crm` steps: (command, fault point[:passage]); None runs the step to its end
CHAIN = [
    ("ingest", "verify"), ("ingest", "bronze:3"), ("ingest", "silver:4"), ("ingest", None),
    ("rollup", "rollup"), ("rollup", None),
    ("analyse", "gold:2"), ("analyse", None), ("train", None),
    ("publish", "publish:2"), ("publish", None),
]
LAYERS = ("bronze", "silver", "gold", "restricted")
RUN_SPECIFIC = {"run_id"}  # which run wrote a row: differs by construction


def _crm(command: str, landing: Path | None, root: Path, fault: str | None,
         extra: list[str] | None = None) -> subprocess.CompletedProcess:
    """`crm <command>` on the lake and warehouse under `root` (unless `extra` names another lake),
    in a process group of its own, with the fault point armed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRM_FAULT")}
    env.update(CRM_MSISDN_HMAC_KEY=KEY, CRM_SHUFFLE_PARTITIONS="2", CRM_DRIVER_MEMORY="2g")
    if fault:
        env["CRM_FAULT"] = fault
    extra = extra or []
    args = ([] if "--lake" in extra else ["--lake", str(root / "lake")]) + extra
    if command == "ingest":
        args += ["--landing", str(landing)]
    if command == "publish":
        args += ["--warehouse", f"duckdb:///{root / 'warehouse.duckdb'}"]
    return subprocess.run(
        [sys.executable, "-m", "crm_pipeline.cli", command, *args], env=env, capture_output=True, text=True,
        timeout=900, start_new_session=True,  # its own process group: the kill must not reach pytest
    )


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    landing = root / "landing"
    # February 2026 and three days of March: one complete month (its bill lands on March 2)
    generate(GeneratorConfig(landing=landing, subscribers=20, start=date(2026, 2, 1), days=31, seed=11,
                             progress="none"))
    clean = root / "clean"
    lake = LakeLayout(str(clean / "lake"))
    gx.keep_results(lake.data_docs)
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_pipeline(spark, landing, lake, f"duckdb:///{clean / 'warehouse.duckdb'}",
                            ops.RunContext("clean"), KEY)
    assert code == 0
    return dict(clean=clean, crashed=root / "crashed", steps=run_chain(CHAIN, landing, root / "crashed"))


def run_chain(chain: list[tuple[str, str | None]], landing: Path, root: Path,
              extra=lambda command: []) -> list[tuple[str, str | None, subprocess.CompletedProcess]]:
    """Run each (command, fault) of `chain` under `root`: a step with a fault must die by it, a
    step without one must succeed."""
    steps = []
    for command, fault in chain:
        proc = _crm(command, landing, root, fault, extra(command))
        steps.append((command, fault, proc))
        expected = -signal.SIGKILL if fault else 0
        assert proc.returncode == expected, f"{command} {fault}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return steps


def _tables(lake: Path) -> dict[str, Path]:
    return {f"{layer}/{p.name}": p for layer in LAYERS if (lake / layer).is_dir()
            for p in sorted((lake / layer).iterdir()) if (p / "_delta_log").is_dir()}


def _content(table: pd.DataFrame) -> tuple[int, int]:
    """Row count and an order-independent checksum of every column but the run-specific ones."""
    table = table.drop(columns=[c for c in table.columns if c in RUN_SPECIFIC])
    table = table[sorted(table.columns)]
    return len(table), int(pd.util.hash_pandas_object(table, index=False).sum())


def test_each_kill_left_work_undone_that_the_next_run_finished(runs):
    out = {(command, fault): proc.stdout for command, fault, proc in runs["steps"]}
    assert "data quality (run" not in out[("ingest", "verify")]  # died before the end of the step
    assert "data quality (run" in out[("ingest", None)]
    assert "analyse: gold written" not in out[("analyse", "gold:2")]
    assert "analyse: gold written" in out[("analyse", None)]
    assert "publish: crm.subscriber_month" in out[("publish", "publish:2")]
    assert "publish: crm_restricted.contact" not in out[("publish", "publish:2")]


def test_every_lake_table_equals_the_uninterrupted_runs(runs):
    clean, crashed = _tables(runs["clean"] / "lake"), _tables(runs["crashed"] / "lake")
    assert set(crashed) == set(clean) and len(clean) > 30
    for name, path in clean.items():
        expected = _content(DeltaTable(str(path)).to_pandas())
        assert _content(DeltaTable(str(crashed[name])).to_pandas()) == expected, name


def test_every_warehouse_table_equals_the_uninterrupted_runs(runs):
    for schema in ("crm",):
        clean = warehouse_tables(runs["clean"] / "warehouse.duckdb", schema)
        crashed = warehouse_tables(runs["crashed"] / "warehouse.duckdb", schema)
        assert set(crashed) == set(clean) and clean
        for name, table in clean.items():
            assert _content(crashed[name]) == _content(table), f"{schema}.{name}"
    contact = {}
    for key in ("clean", "crashed"):
        path = runs[key] / "warehouse_restricted.duckdb"
        contact[key] = _content(warehouse_tables(path, "crm_restricted")["contact"])
    assert contact["crashed"] == contact["clean"]


def test_every_loaded_file_of_the_crashed_lake_adds_up_once(runs):
    rows = DeltaTable(str(runs["crashed"] / "lake" / "ops" / "pipeline_runs")).to_pandas()
    files = rows[rows["status"] == "SUCCESS"].dropna(subset=["source_file"])
    files = files[files["source_file"] != ""]
    assert (files["rows_read"] == files["rows_loaded"] + files["rows_quarantined"] + files["rows_duplicate"]).all()
    deliveries = DeltaTable(str(runs["crashed"] / "lake" / "ops" / "deliveries")).to_pandas()
    loaded = deliveries[deliveries["status"] == "LOADED"].groupby(["feed", "business_date"])["delivery_id"].nunique()
    assert (loaded == 1).all()  # one delivery per feed and day, however often it was read
