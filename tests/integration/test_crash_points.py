"""Crash safety of ingest and rollups alone: their fault points on a landing zone of two feeds and
four days (about 5 minutes: `make crash-test` runs it with the whole chain of
`test_crash_safety.py`; the publish point runs in the suite, in test_failures_on_record.py).
"""

from __future__ import annotations

import contextlib
import io
from datetime import date

import pytest
from deltalake import DeltaTable

from crm_pipeline import ops
from crm_pipeline.generate import GeneratorConfig, generate
from crm_pipeline.ingest.load import ingest
from crm_pipeline.pipeline.rollups import build_daily_rollups
from crm_pipeline.settings import LakeLayout
from tests.integration.conftest import KEY
from tests.integration.test_crash_safety import _content, _tables, run_chain

pytestmark = [pytest.mark.spark, pytest.mark.integration, pytest.mark.crash]

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
