"""Golden fixture: a few hand-written deliveries whose silver and quarantine rows are known by hand.

Covers a late CDR, duplicates (same file and later delivery), a re-delivered day, a GBK file, a
CRLF file, a gzipped file, a reassigned number, a ticket updated by a later delivery, a delivery
failing its md5 check, and one bad record of each record-level kind.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pytest

from crm_pipeline import ops
from crm_pipeline.ingest.load import ingest
from crm_pipeline.settings import LakeLayout
from tests.conftest import write_delivery

pytestmark = pytest.mark.spark

D1, D2, D3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)

S1 = "S1|13800000001|C1|A1||王伟|320102199001011234|M|1990|025|GOTONE|P1|POSTPAID|5G|20250101|ACTIVE|20250101||STORE"
S2 = "S2|13900000009|C2|A2||李娜||F|1985|0512|EASYOWN|P2|PREPAID|4G|20240501|TERMINATED|20260115|PORT_OUT|AGENT"
S3 = "S3|13900000009|C3|A3|G1|南京某某科技有限公司|91320100MA1X|||025|ENTERPRISE|P1|POSTPAID|5G|20260302|ACTIVE|20260302||ONLINE"
S3_D1_TYPO = "S9|13700000000|C9|A9||赵六||M|1970|025|GOTONE|P1|POSTPAID|4G|20250101|ACTIVE|20250101||STORE"


def cdr(cdr_id, msisdn, start, duration="60", direction="MO", cell="C001", other="13912345678"):
    return f"{cdr_id}|{msisdn}|{other}|{direction}|{start}|{duration}|LOCAL|ON_NET|{cell}|0"


D1_CDRS = [
    cdr("V1", "13800000001", "20260301100000"),                     # 1 loaded later superseded by D3's copy
    cdr("V2", "13900000009", "20260301110000"),                     # 2 unknown_subscriber: nobody holds it on D1
    "V3|13800000001|13912345678|MO|20260301100000|60|LOCAL|ON_NET|C001",  # 3 field_count
    cdr("V4", "13800000001", "2026030125XXXX"),                     # 4 bad_timestamp
    cdr("V5", "13800000001", "20260301100000", duration="12a"),     # 5 bad_number
    cdr("V6", "13800000001", "20260301100000", direction="XX"),     # 6 bad_code
    cdr("V7", "13800000001", "20260301100000", duration="-5"),      # 7 out_of_range
    cdr("V8", "13800000001", "20260301100000", cell=""),            # 8 missing_value
    cdr("V9", "1380000", "20260301100000"),                         # 9 bad_msisdn
    cdr("V10", "13800000001", "20260220100000"),                    # 10 outside_window
    "",                                                             # 11 blank: not a record
    cdr("V11", "13800000001", "20260301100000", cell="C\udcff").encode("utf-8", "surrogateescape"),  # 12 bad_encoding
    cdr("V1", "13800000001", "20260301100000"),                     # 13 duplicate of line 1
    cdr("V12", "+8613800000001", "20260301120000"),                 # 14 loaded, prefix removed
]
D2_V1_CDRS = [cdr("V14", "13900000009", "20260302090000"), cdr("V15", "13800000001", "20260302100000")]
D2_V2_CDRS = [cdr("V14", "13900000009", "20260302090000"), cdr("V16", "13800000001", "20260302110000")]
D3_CDRS = [cdr("V17", "13800000001", "20260301235000"), cdr("V1", "13800000001", "20260301100000")]

T1_OPEN = "T1|13800000001|20260301100000|HOTLINE|BILLING|1||"
T1_RESOLVED = "T1|13800000001|20260301100000|HOTLINE|BILLING|1|20260302090000|4"


def _silver(spark, lake, feed, cols):
    return sorted(tuple(r) for r in spark.read.format("delta").load(lake.silver(feed)).select(*cols).collect())


@pytest.fixture(scope="module")
def golden(spark, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing")
    lake = LakeLayout(str(tmp_path_factory.mktemp("lake")))
    write_delivery(landing, "subscriber", D1, [[S1, S2, S3_D1_TYPO]], encoding="GBK")
    write_delivery(landing, "subscriber", D2, [[S1, S2, S3]], crlf=True)
    write_delivery(landing, "cdr_voice", D1, [D1_CDRS], gz=True)
    write_delivery(landing, "cdr_voice", D2, [D2_V1_CDRS])
    write_delivery(landing, "ticket", D1, [[T1_OPEN]])
    first = ingest(spark, landing, lake, ops.RunContext("run-1"), date_to=D2, progress=lambda m: None)

    write_delivery(landing, "subscriber", D3, [[S1, S2, S3]])
    write_delivery(landing, "cdr_voice", D2, [D2_V2_CDRS])  # re-delivery of D2
    write_delivery(landing, "cdr_voice", D3, [D3_CDRS[:1], D3_CDRS[1:]])
    write_delivery(landing, "ticket", D2, [[T1_RESOLVED]])
    bad = write_delivery(landing, "ticket", D3, [["T2|13800000001|20260303100000|ONLINE|NETWORK|0||"]])
    (bad / "TICKET_20260303_001.dat").write_text("T2|13800000001|20260303100000|ONLINE|NETWORK|1||\n")
    redo = write_delivery(landing, "cdr_voice", D1, [[cdr("V99", "13800000001", "20260301130000")]], gz=True)
    (redo / "CDR_VOICE_20260301_001.dat.gz").write_bytes(b"\x1f\x8b truncated")  # re-delivery fails its checks
    second = ingest(spark, landing, lake, ops.RunContext("run-2"), progress=lambda m: None)
    return landing, lake, first, second


def test_silver_cdr_voice_holds_exactly_the_hand_derived_rows(spark, golden):
    _, lake, _, _ = golden
    got = _silver(spark, lake, "cdr_voice", ["event_date", "cdr_id", "subscriber_id", "msisdn", "business_date", "source_file", "line_no"])
    assert got == sorted([
        (D1, "V1", "S1", "13800000001", D3, "cdr_voice/20260303/CDR_VOICE_20260303_002.dat", 1),
        (D1, "V12", "S1", "13800000001", D1, "cdr_voice/20260301/CDR_VOICE_20260301_001.dat.gz", 14),
        (D1, "V17", "S1", "13800000001", D3, "cdr_voice/20260303/CDR_VOICE_20260303_001.dat", 1),
        (D2, "V14", "S3", "13900000009", D2, "cdr_voice/20260302/CDR_VOICE_20260302_001.dat", 1),
        (D2, "V16", "S1", "13800000001", D2, "cdr_voice/20260302/CDR_VOICE_20260302_001.dat", 2),
    ])


def test_typed_values_of_a_loaded_cdr(spark, golden):
    _, lake, _, _ = golden
    row = spark.read.format("delta").load(lake.silver("cdr_voice")).where("cdr_id = 'V12'").collect()[0]
    assert row.start_time == datetime(2026, 3, 1, 12, 0, 0)
    assert row.duration_sec == 60 and row.direction == "MO" and row.charge_fen == 0


def test_quarantine_holds_one_row_per_bad_record_with_its_reason(spark, golden):
    _, lake, _, _ = golden
    q = spark.read.format("delta").load(lake.quarantine).where("feed = 'cdr_voice'")
    got = sorted((r.source_file, r.line_no, r.reject_reason) for r in q.collect())
    f = "cdr_voice/20260301/CDR_VOICE_20260301_001.dat.gz"
    assert got == sorted([
        (f, 2, "unknown_subscriber"), (f, 3, "field_count"), (f, 4, "bad_timestamp"), (f, 5, "bad_number"),
        (f, 6, "bad_code"), (f, 7, "out_of_range"), (f, 8, "missing_value"), (f, 9, "bad_msisdn"),
        (f, 10, "outside_window"), (f, 12, "bad_encoding"),
    ])


def test_quarantine_details_mask_msisdns(spark, golden):
    _, lake, _, _ = golden
    q = spark.read.format("delta").load(lake.quarantine).where("reject_reason = 'unknown_subscriber'").collect()
    assert len(q) == 1 and "13900000009" not in q[0].reject_detail and "139******09" in q[0].reject_detail


def test_gbk_snapshot_decodes_chinese_names(spark, golden):
    _, lake, _, _ = golden
    got = _silver(spark, lake, "subscriber", ["snapshot_date", "subscriber_id", "customer_name"])
    assert (D1, "S1", "王伟") in got and (D2, "S3", "南京某某科技有限公司") in got
    assert len([g for g in got if g[0] == D3]) == 3


def test_ticket_updated_by_later_delivery_keeps_latest_version(spark, golden):
    _, lake, _, _ = golden
    got = _silver(spark, lake, "ticket", ["ticket_id", "resolved_time", "satisfaction", "business_date"])
    assert got == [("T1", datetime(2026, 3, 2, 9, 0, 0), 4, D2)]


def test_failed_md5_delivery_loads_nothing_and_names_file_and_check(spark, golden):
    _, lake, _, second = golden
    failed = {r["source_file"]: r["message"] for r in second.rows if r["status"] == "FAILED"}
    assert set(failed) == {"ticket/20260303/TICKET_20260303_001.dat", "cdr_voice/20260301/CDR_VOICE_20260301_001.dat.gz"}
    message = failed["ticket/20260303/TICKET_20260303_001.dat"]
    assert "TICKET_20260303_001.dat" in message and "check md5" in message
    assert not second.ok
    tickets = spark.read.format("delta").load(lake.bronze("ticket")).where("business_date = DATE'2026-03-03'")
    assert tickets.count() == 0


def test_a_failed_redelivery_leaves_the_earlier_delivery_in_place(spark, golden):
    _, lake, _, second = golden
    failed = [r for r in second.rows if r["status"] == "FAILED" and r["feed"] == "cdr_voice"]
    assert len(failed) == 1 and "check byte_size" in failed[0]["message"]
    bronze = spark.read.format("delta").load(lake.bronze("cdr_voice")).where("business_date = DATE'2026-03-01'")
    assert bronze.where("cdr_id = 'V99'").count() == 0 and bronze.where("cdr_id = 'V12'").count() == 1


def test_accounting_per_file_adds_up_and_matches_hand_counts(golden):
    _, _, first, second = golden
    by_file = {(r["run_id"], r["source_file"]): r for r in first.rows + second.rows if r["status"] == "SUCCESS"}
    for r in by_file.values():
        assert r["rows_read"] == r["rows_loaded"] + r["rows_quarantined"] + r["rows_duplicate"]
    d1 = by_file[("run-1", "cdr_voice/20260301/CDR_VOICE_20260301_001.dat.gz")]
    assert (d1["rows_read"], d1["rows_loaded"], d1["rows_quarantined"], d1["rows_duplicate"]) == (13, 2, 10, 1)
    d3 = by_file[("run-2", "cdr_voice/20260303/CDR_VOICE_20260303_002.dat")]
    assert (d3["rows_read"], d3["rows_loaded"], d3["rows_duplicate"]) == (1, 1, 0)
    assert ("run-2", "cdr_voice/20260301/CDR_VOICE_20260301_001.dat.gz") not in by_file  # D1 not reloaded


def test_the_typed_copies_of_the_loads_are_gone_once_they_end(golden):
    _, lake, _, _ = golden
    left = [p for feed in ("subscriber", "cdr_voice", "ticket") for p in Path(lake.typed_copy(feed)).glob("*")]
    assert Path(lake.typed_copy("cdr_voice")).parent.is_dir() and left == []


def test_pipeline_runs_table_records_both_runs(spark, golden):
    _, lake, _, _ = golden
    runs = spark.read.format("delta").load(lake.ops("pipeline_runs"))
    assert {r.run_id for r in runs.select("run_id").distinct().collect()} == {"run-1", "run-2"}
    bad = runs.where("rows_read != rows_loaded + rows_quarantined + rows_duplicate").count()
    assert bad == 0


def test_a_clean_redelivery_clears_its_days_rejects_and_a_clean_first_delivery_writes_no_quarantine(
        spark, tmp_path):
    from deltalake import DeltaTable

    landing, lake = tmp_path / "landing", LakeLayout(str(tmp_path / "lake"))
    plan = "P1|GOTONE 58|POSTPAID|5800|300|100|20480|5G"

    def load_plan(day, lines, run_id):
        write_delivery(landing, "plan", day, [lines])
        result = ingest(spark, landing, lake, ops.RunContext(run_id), feeds=["plan"], progress=lambda m: None)
        assert result.ok, result.failures
        rejects = spark.read.format("delta").load(lake.quarantine).where("feed = 'plan'")
        return sorted((r.business_date, r.reject_reason) for r in rejects.collect())

    assert load_plan(D1, [plan, "P2|broken"], "q-1") == [(D1, "field_count")]
    assert load_plan(D1, [plan], "q-2") == []  # the re-delivery withdrew the broken line
    version = DeltaTable(lake.quarantine).version()
    assert load_plan(D2, [plan], "q-3") == []
    assert DeltaTable(lake.quarantine).version() == version  # nothing to replace: no commit


def test_few_rejects_are_committed_through_delta_rs_and_many_through_spark_on_the_same_table(
        spark, tmp_path, monkeypatch):
    from deltalake import DeltaTable

    from crm_pipeline.io import delta_rs

    landing, lake = tmp_path / "landing", LakeLayout(str(tmp_path / "lake"))
    plan = "P1|GOTONE 58|POSTPAID|5800|300|100|20480|5G"

    def load_plan(day, lines, run_id, local_rows):
        monkeypatch.setattr(delta_rs, "LOCAL_WRITE_ROWS", local_rows)
        write_delivery(landing, "plan", day, [lines])
        result = ingest(spark, landing, lake, ops.RunContext(run_id), feeds=["plan"], progress=lambda m: None)
        assert result.ok, result.failures
        table = DeltaTable(lake.quarantine)
        by_spark = sorted((r.business_date, r.line_no, r.raw_line, r.run_id)
                          for r in spark.read.format("delta").load(lake.quarantine).collect())
        by_rs = sorted((r["business_date"], r["line_no"], r["raw_line"], r["run_id"])
                       for r in table.to_pyarrow_table().to_pylist())
        assert by_spark == by_rs
        return table.history(1)[0]["engineInfo"].split(":")[0].split("/")[0], by_spark

    # the table created by Spark (the limit below the batch's two rejects), then written by delta-rs,
    # Spark again on delta-rs's commit, and a clean re-delivery clearing its day through delta-rs
    assert load_plan(D1, [plan, "P2|broken", "P3|broken"], "q-1", 1) == (
        "Apache-Spark", [(D1, 2, "P2|broken", "q-1"), (D1, 3, "P3|broken", "q-1")])
    assert load_plan(D2, ["P4|broken", plan], "q-2", 50_000) == (
        "delta-rs", [(D1, 2, "P2|broken", "q-1"), (D1, 3, "P3|broken", "q-1"), (D2, 1, "P4|broken", "q-2")])
    assert load_plan(D2, [plan, "P5|broken", "P6|broken"], "q-3", 1) == (
        "Apache-Spark", [(D1, 2, "P2|broken", "q-1"), (D1, 3, "P3|broken", "q-1"),
                         (D2, 2, "P5|broken", "q-3"), (D2, 3, "P6|broken", "q-3")])
    assert load_plan(D1, [plan], "q-4", 50_000) == (
        "delta-rs", [(D2, 2, "P5|broken", "q-3"), (D2, 3, "P6|broken", "q-3")])


class _Killed(BaseException):
    """A process death at a fault point: nothing after it runs (no `except Exception` catches it)."""


@pytest.mark.parametrize("point", ["bronze", "silver"])
def test_an_empty_redelivery_whose_run_died_after_its_bronze_or_silver_commit_is_finished_by_the_next_run(
        spark, tmp_path, monkeypatch, point):
    """A re-delivery withdrawing the day's only record, its run dead after the bronze commit (bronze
    holds no row of the day any more) or after the silver commit (silver neither): the next run
    still knows the day was loaded before (ops/deliveries), removes the record from silver, and the
    silver partition it sat in is on record for the rollups."""
    from deltalake import DeltaTable

    from crm_pipeline import faults

    landing, lake = tmp_path / "landing", LakeLayout(str(tmp_path / "lake"))
    write_delivery(landing, "subscriber", D2, [[S1]])
    write_delivery(landing, "cdr_voice", D2, [[cdr("V15", "13800000001", "20260302100000")]])
    assert ingest(spark, landing, lake, ops.RunContext("first"), progress=lambda m: None).ok
    write_delivery(landing, "cdr_voice", D2, [[]])  # the re-delivery: no record

    def die(name):
        if name == point:
            raise _Killed(name)

    monkeypatch.setattr(faults, "point", die)
    with pytest.raises(_Killed):
        ingest(spark, landing, lake, ops.RunContext("killed"), progress=lambda m: None)
    monkeypatch.undo()
    assert ingest(spark, landing, lake, ops.RunContext("next"), progress=lambda m: None).ok

    assert _silver(spark, lake, "cdr_voice", ["cdr_id"]) == []
    changes = DeltaTable(lake.ops("silver_changes")).to_pandas()
    assert ("cdr_voice", D2) in {(f, d) for f, d, run in zip(changes["feed"], changes["partition_date"],
                                                             changes["run_id"]) if run != "first"}, changes
    loaded = DeltaTable(lake.ops("deliveries")).to_pandas()
    assert sorted(loaded[loaded["feed"] == "cdr_voice"]["run_id"]) == ["first", "next"]
