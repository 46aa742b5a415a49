"""Ingest a generated landing zone and hold it against the generator's ground truth."""

from __future__ import annotations

import json
from collections import Counter
from datetime import date

import pytest
from pyspark.sql import functions as F

from crm_pipeline import ops
from crm_pipeline.generate import GeneratorConfig, generate
from crm_pipeline.ingest.load import ingest
from crm_pipeline.pipeline.monthly import fingerprint
from crm_pipeline.settings import LakeLayout

pytestmark = [pytest.mark.spark, pytest.mark.integration]


@pytest.fixture(scope="module")
def loaded(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    landing, lake = root / "landing", LakeLayout(str(root / "lake"))
    # 40 days from January 1st: January's bill (February 2nd) and its correction (February 10th).
    generate(GeneratorConfig(landing=landing, subscribers=250, start=date(2026, 1, 1), days=40, seed=5,
                             bad_rate=0.002, progress="none"))
    truth = json.loads((landing / "_generator" / "truth.json").read_text())
    result = ingest(spark, landing, lake, ops.RunContext("gen-1"), progress=lambda m: None)
    return landing, lake, truth, result


def test_every_delivery_loads(loaded):
    _, _, _, result = loaded
    assert result.ok and not result.waiting and not result.failures


def test_per_feed_counts_equal_the_generators_truth(loaded):
    _, _, truth, result = loaded
    got = result.totals_by_feed()
    for feed, t in truth["feeds"].items():
        if t["deliveries"] == 0:
            continue
        g = got[feed]
        assert (g["rows_read"], g["rows_loaded"], g["rows_quarantined"], g["rows_duplicate"]) == (
            t["lines_written"], t["good_records"], t["bad_total"], t["duplicates"] + t["updates"]
        ), feed


def test_quarantine_holds_exactly_the_planted_bad_records(spark, loaded):
    _, lake, truth, _ = loaded
    q = spark.read.format("delta").load(lake.quarantine)
    got = Counter((r.feed, r.source_file, r.line_no, r.reject_reason) for r in q.collect())
    planted = Counter((b["feed"], b["file"], b["line"], b["reason"]) for b in truth["bad_records"])
    assert got == planted
    assert set(truth["reason_codes"]) <= {k[3] for k in got}


def test_records_read_equal_loaded_plus_quarantined_plus_duplicates_for_every_file(loaded):
    _, _, truth, result = loaded
    rows = [r for r in result.rows if r["status"] == "SUCCESS"]
    assert len(rows) == sum(t["files"] for t in truth["feeds"].values())
    for r in rows:
        assert r["rows_read"] == r["rows_loaded"] + r["rows_quarantined"] + r["rows_duplicate"], r["source_file"]


def test_silver_holds_one_row_per_good_record(spark, loaded):
    _, lake, truth, _ = loaded
    for feed in ("cdr_voice", "cdr_sms", "cdr_data", "recharge", "ticket", "survey"):
        df = spark.read.format("delta").load(lake.silver(feed))
        assert df.count() == truth["feeds"][feed]["good_records"], feed
        assert df.where(F.col("subscriber_id").isNull()).count() == 0


def test_a_second_run_on_unchanged_input_loads_nothing_and_changes_nothing(spark, loaded):
    landing, lake, _, _ = loaded
    tables = [lake.silver(f) for f in ("subscriber", "cdr_voice", "ticket", "bill")] + [lake.quarantine]
    before = [fingerprint(spark.read.format("delta").load(t)) for t in tables]
    again = ingest(spark, landing, lake, ops.RunContext("gen-2"), progress=lambda m: None)
    assert again.ok and again.rows == []
    assert [fingerprint(spark.read.format("delta").load(t)) for t in tables] == before
