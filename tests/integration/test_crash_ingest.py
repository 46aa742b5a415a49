"""Crash safety of ingest: `crm ingest` killed with SIGKILL while a Spark task reads and verifies
a file, after a bronze commit and after a silver commit, then run to its end, leaves every lake
table equal in content to an uninterrupted ingest: no delivery half-loaded, none loaded twice.
About 4 minutes on 2 cores: `make crash-test` runs it with the whole chain of
test_crash_safety.py; the publish point runs in the suite (test_failures_on_record.py)."""

from __future__ import annotations

import contextlib
import io
from datetime import date

import pytest

from crm_pipeline import ops
from crm_pipeline.generate import GeneratorConfig, generate
from crm_pipeline.ingest.load import ingest
from crm_pipeline.settings import LakeLayout
from tests.integration.crash import lake_contents, loaded_once, run_chain

pytestmark = [pytest.mark.spark, pytest.mark.integration, pytest.mark.crash]

FEEDS = "subscriber,cdr_voice"
CHAIN = [("ingest", "verify"), ("ingest", "bronze:2"), ("ingest", "silver:2"), ("ingest", None)]


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-ingest")
    landing = root / "landing"
    generate(GeneratorConfig(landing=landing, subscribers=30, start=date(2026, 2, 1), days=2, seed=13, bad_rate=0.01,
                             progress="none"))
    clean = LakeLayout(str(root / "clean" / "lake"))
    with contextlib.redirect_stdout(io.StringIO()):
        ingest(spark, landing, clean, ops.RunContext("clean"), feeds=FEEDS.split(","))
    out = run_chain(CHAIN, landing, root / "crashed", lambda command: ["--feeds", FEEDS])
    return dict(clean=root / "clean", crashed=root / "crashed", out=out)


def test_killed_ingests_rerun_to_the_uninterrupted_tables(runs):
    clean, crashed = lake_contents(runs["clean"] / "lake"), lake_contents(runs["crashed"] / "lake")
    assert set(clean) >= {"bronze/cdr_voice", "silver/cdr_voice", "bronze/subscriber", "restricted/quarantine"}
    assert crashed == clean


def test_each_kill_stopped_its_ingest_before_the_end(runs):
    out = runs["out"]
    assert all("data quality (run" not in out[("ingest", fault)].stdout for fault in ("verify", "bronze:2", "silver:2"))
    assert "data quality (run" in out[("ingest", None)].stdout


def test_every_file_of_the_crashed_lake_is_loaded_once_and_adds_up(runs):
    crashed = loaded_once(runs["crashed"] / "lake")
    assert len(crashed) == 2 * 2 and crashed.equals(loaded_once(runs["clean"] / "lake"))  # each feed and day
