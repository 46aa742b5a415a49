"""The shared run's ingest held against the generator's ground truth for its landing zone
(`_generator/truth.json`): per-feed counts, the planted bad records, per-file accounting, silver."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from crm_pipeline.ingest.load import IngestResult

pytestmark = [pytest.mark.spark, pytest.mark.integration]


@pytest.fixture(scope="module")
def loaded(published):
    """Landing, lake, truth, and the first run's ingest as its crm_ops.pipeline_runs rows tell it."""
    landing, lake = published["landing"], published["lake"]
    truth = json.loads((landing / "_generator" / "truth.json").read_text())
    runs = DeltaTable(lake.ops("pipeline_runs")).to_pyarrow_table().to_pylist()
    rows = [r for r in runs if r["run_id"] == "run-1" and r["feed"]]  # per file or delivery
    result = IngestResult("run-1", rows, failures=[r["message"] for r in rows if r["status"] == "FAILED"],
                          waiting=[r["message"] for r in rows if r["status"] == "WAITING"])
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
