"""Crash safety, the whole chain (`make crash-test`, about 14 minutes on 2 cores): every `crm`
step of a small generated month in its own process, as Airflow runs them, killed with SIGKILL at
every named fault point (`crm_pipeline.faults`) and run again, ends with every lake table and
every warehouse table equal in content to an uninterrupted `crm run` of the same landing zone.

Ingest dies while a Spark task reads and verifies a file, again after a bronze commit, again
after a silver commit, then finishes; the rollups die between their two tables, then finish;
analyse dies between two gold marts (after the month's three summaries, built first, and its
first mart), then finishes; publish dies between two tables of its
transaction, then finishes. `make crash-test` also runs the ingest points alone
(test_crash_ingest.py); the suite runs the publish point (test_failures_on_record.py).
"""

from __future__ import annotations

import contextlib
import io
from datetime import date

import pytest

from crm_pipeline import ops
from crm_pipeline.entrypoints.run import run_pipeline
from crm_pipeline.generate import GeneratorConfig, generate
from crm_pipeline.quality import gx
from crm_pipeline.settings import LakeLayout
from tests.integration.conftest import KEY
from tests.integration.crash import lake_contents, loaded_once, run_chain, warehouse_contents

pytestmark = [pytest.mark.spark, pytest.mark.integration, pytest.mark.crash]

#: the chain of `crm` steps: (command, fault point[:passage]); None runs the step to its end
CHAIN = [
    ("ingest", "verify"), ("ingest", "bronze:3"), ("ingest", "silver:4"), ("ingest", None),
    ("rollup", "rollup"), ("rollup", None),
    ("analyse", "gold:5"), ("analyse", None), ("train", None),
    ("publish", "publish:2"), ("publish", None),
]


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
    return dict(clean=clean, crashed=root / "crashed", out=run_chain(CHAIN, landing, root / "crashed"))


def test_each_kill_left_work_undone_that_the_next_run_finished(runs):
    out = runs["out"]
    assert "data quality (run" not in out[("ingest", "verify")].stdout  # died before the end of the step
    assert "data quality (run" in out[("ingest", None)].stdout
    assert "analyse: gold written" not in out[("analyse", "gold:5")].stdout
    assert "analyse: gold written" in out[("analyse", None)].stdout
    assert "publish: crm.subscriber_month" in out[("publish", "publish:2")].stdout
    assert "publish: crm_restricted.contact" not in out[("publish", "publish:2")].stdout


def test_every_lake_table_equals_the_uninterrupted_runs(runs):
    clean, crashed = lake_contents(runs["clean"] / "lake"), lake_contents(runs["crashed"] / "lake")
    assert set(crashed) == set(clean) and len(clean) > 30
    for name, expected in clean.items():
        assert crashed[name] == expected, name


def test_every_warehouse_table_equals_the_uninterrupted_runs(runs):
    clean, crashed = warehouse_contents(runs["clean"]), warehouse_contents(runs["crashed"])
    assert set(crashed) == set(clean) and len(clean) > 10
    for name, expected in clean.items():
        assert crashed[name] == expected, name


def test_every_loaded_file_of_the_crashed_lake_adds_up_once(runs):
    crashed = loaded_once(runs["crashed"] / "lake")
    assert len(crashed) > 0 and crashed.equals(loaded_once(runs["clean"] / "lake"))
