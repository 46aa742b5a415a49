"""The bad-input catalogue of the input contract, case by case, on one hand-built landing zone.

Record-level problems are quarantined with reason, file and line; delivery-level problems load
nothing of that delivery and fail with a message naming the file and the check (a FAILED run row
and a failed `landing_<feed>` check in crm_ops.data_quality); folders without a control file and
skipped feed days are on record; the other feeds and days load; `crm ingest` exits 1; the counts
of every loaded file add up. (Cases the golden ingest test already pins down, such as md5 and size
mismatches, re-deliveries, bad codes, timestamps and numbers in voice CDRs, are listed in
docs/data-quality.md with that test's names.)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from datetime import date

import pytest
from deltalake import DeltaTable

from crm_pipeline import cli
from crm_pipeline.errors import EXIT_FAILED
from crm_pipeline.settings import LakeLayout
from tests.conftest import write_delivery

pytestmark = [pytest.mark.spark, pytest.mark.integration]

D1, D2, D3, D4, D5 = (date(2026, 3, d) for d in range(1, 6))
SUBSCRIBERS = [
    "S1|13800000001|C1|A1||Wang Wei||M|1990|025|GOTONE|P1|POSTPAID|5G|20250101|ACTIVE|20250101||STORE",
    "S2|13900000002|C2|A2||Li Na||F|1985|0512|EASYOWN|P2|PREPAID|4G|20240501|ACTIVE|20240501||AGENT",
]


def data(cdr_id, start, up="100", down="2000", rat="4G", msisdn="13800000001"):
    return f"{cdr_id}|{msisdn}|{start}|60|{up}|{down}|{rat}|cmnet|C001|0"


def voice(cdr_id, start):
    return f"{cdr_id}|13800000001|13912345678|MO|{start}|60|LOCAL|CMCC|C001|10"


def sms(cdr_id, msisdn, when="20260301120000"):
    return f"{cdr_id}|{msisdn}|13912345678|MO|{when}|P2P|ON_NET|10"


def plan(plan_id, name):
    return f"{plan_id}|{name}|POSTPAID|5800|300|100|20480|5G"


def _control(day_dir, lines: list[str]) -> None:
    name = f"{day_dir.parent.name.upper()}_{day_dir.name}.ctl"
    (day_dir / name).write_text("".join(f"{ln}\n" for ln in lines))


def _ctl_line(path, rows: int, encoding="UTF-8") -> str:
    body = path.read_bytes()
    return f"{path.name}|{rows}|{len(body)}|{hashlib.md5(body).hexdigest()}|{encoding}"


@pytest.fixture(scope="module")
def catalogue(spark, tmp_path_factory):
    landing = tmp_path_factory.mktemp("landing")
    lake = LakeLayout(str(tmp_path_factory.mktemp("lake")))
    for day in (D1, D2, D3, D4):
        write_delivery(landing, "subscriber", day, [SUBSCRIBERS])

    # cdr_voice: three ordinary days, then a day whose control file matches but which holds 5 calls
    for day, calls in ((D1, 40), (D2, 45), (D3, 38), (D4, 5)):
        write_delivery(landing, "cdr_voice", day, [[voice(f"V{day:%d}{i:02d}", f"{day:%Y%m%d}08{i:02d}00")
                                                   for i in range(calls)]])

    # cdr_data: record-level defects on D1; one file delivered twice on D2; D3 still being written
    write_delivery(landing, "cdr_data", D1, [[
        data("D1", "20260301100000"),                       # 1 loaded
        data("D2", "20260301100000", up="-5"),              # 2 out_of_range: negative bytes
        data("D3", "20260301100000", rat="6G"),             # 3 bad_code
        data("D4", "2026030110"),                           # 4 bad_timestamp
        data("D5", "20260301100000")[:-2],                  # 5 field_count: last separator cut
    ]])
    twice = [data("D6", "20260302080000"), data("D7", "20260302090000")]
    write_delivery(landing, "cdr_data", D2, [twice, twice])  # file 002 = file 001
    write_delivery(landing, "cdr_data", D3, [[data("D8", "20260303080000")]], control=False)

    # cdr_sms: numbers the operator does not hold on D1; D2 never delivered; D3 a truncated gzip
    write_delivery(landing, "cdr_sms", D1, [[
        sms("M1", "13800000001"),        # 1 loaded
        sms("M2", "447700900123"),       # 2 bad_msisdn: a foreign (UK) number
        sms("M3", "13300000003"),        # 3 unknown_subscriber: another operator's number
        sms("M4", "+8613900000002"),     # 4 loaded: country prefix removed
    ]])
    d3 = write_delivery(landing, "cdr_sms", D3, [[sms("M5", "13800000001", "20260303120000")]], gz=True)
    gz = d3 / "CDR_SMS_20260303_001.dat.gz"
    gz.write_bytes(gz.read_bytes()[:-12])  # the control file matches the truncated file
    _control(d3, [_ctl_line(gz, 1)])

    # ticket: an empty day (0 rows declared); an empty file whose control says 3 rows; a missing file
    write_delivery(landing, "ticket", D1, [[]])
    t2 = write_delivery(landing, "ticket", D2, [[]])
    _control(t2, [_ctl_line(t2 / "TICKET_20260302_001.dat", 3)])
    t3 = write_delivery(landing, "ticket", D3, [["T3|13800000001|20260303100000|ONLINE|NETWORK|0||"]])
    (t3 / "TICKET_20260303_001.dat").unlink()

    # plan: a GBK file declared UTF-8; an unlisted extra data file; a malformed control line
    write_delivery(landing, "plan", D1, [[plan("P1", "GOTONE 58").encode(), plan("P2", "畅享套餐").encode("gbk")]])
    p2 = write_delivery(landing, "plan", D2, [[plan("P1", "GOTONE 58")]])
    (p2 / "PLAN_20260302_002.dat").write_text(plan("P9", "stray") + "\n")
    p3 = write_delivery(landing, "plan", D3, [[plan("P1", "GOTONE 58")]])
    ctl = p3 / "PLAN_20260303.ctl"
    ctl.write_text(ctl.read_text().rsplit("|", 1)[0] + "\n")  # the encoding field is gone

    # survey: a day whose subscriber snapshot has not landed yet
    write_delivery(landing, "survey", D5, [["Q1|13800000001|20260305|8|7|9|8"]])

    # recharge: a UTF-8 file declared GBK (it would load as mojibake)
    channels = ["微信支付", "支付宝", "营业厅"]
    write_delivery(landing, "recharge", D1, [[
        f"R{i}|A1|13800000001|20260301100000|RECHARGE|5000|{c}".encode() for i, c in enumerate(channels)]],
        encoding="GBK")

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["ingest", "--landing", str(landing), "--lake", lake.root, "--run-id", "cat-1"])
    runs = DeltaTable(lake.ops("pipeline_runs")).to_pyarrow_table().to_pylist()
    dq = DeltaTable(lake.ops("data_quality")).to_pyarrow_table().to_pylist()
    return dict(code=code, lake=lake, runs=runs, dq=dq, out=out.getvalue())


def _silver_ids(spark, lake, feed, key):
    try:
        return sorted(r[0] for r in spark.read.format("delta").load(lake.silver(feed)).select(key).collect())
    except Exception:  # noqa: BLE001 - no silver table yet
        return []


def _quarantine(spark, lake, feed):
    q = spark.read.format("delta").load(lake.quarantine).where(f"feed = '{feed}'")
    return sorted((r.source_file, r.line_no, r.reject_reason) for r in q.collect())


def test_a_failed_delivery_exits_1_and_the_others_load(spark, catalogue):
    assert catalogue["code"] == EXIT_FAILED
    assert _silver_ids(spark, catalogue["lake"], "cdr_data", "cdr_id") == ["D1", "D6", "D7"]
    assert _silver_ids(spark, catalogue["lake"], "cdr_sms", "cdr_id") == ["M1", "M4"]


def test_delivery_level_problems_fail_naming_file_and_check(catalogue):
    failed = {(r["source_file"], r["status"]) for r in catalogue["runs"] if r["status"] == "FAILED"}
    checks = {r["check_name"] for r in catalogue["dq"]
              if r["table_name"].startswith("landing_") and r["severity"] == "blocking"}
    assert checks == {
        "gzip_integrity(cdr_sms/20260303/CDR_SMS_20260303_001.dat.gz)",
        "row_count(ticket/20260302/TICKET_20260302_001.dat)",
        "file_missing(ticket/20260303/TICKET_20260303_001.dat)",
        "unlisted_file(plan/20260302/PLAN_20260302_002.dat)",
        "control_format(plan/20260303/PLAN_20260303.ctl)",
        "encoding(recharge/20260301/RECHARGE_20260301_001.dat)",
    }
    assert len(failed) == 6
    for r in catalogue["runs"]:
        if r["status"] == "FAILED":
            file_name = r["source_file"].rsplit("/", 1)[1]
            assert file_name in r["message"] and "check " in r["message"], r["message"]


def test_failed_deliveries_load_nothing(spark, catalogue):
    lake = catalogue["lake"]
    for feed, day in (("cdr_sms", D3), ("ticket", D2), ("ticket", D3), ("plan", D2), ("plan", D3)):
        bronze = spark.read.format("delta").load(lake.bronze(feed)).where(f"business_date = DATE'{day}'")
        assert bronze.count() == 0, (feed, day)
    assert not DeltaTable.is_deltatable(lake.bronze("recharge"))  # its only delivery failed: no commit
    assert not DeltaTable.is_deltatable(lake.silver("recharge"))
    assert _silver_ids(spark, lake, "plan", "snapshot_date") == [D1]  # P1 of D1 (P2 is quarantined)


def test_record_level_problems_are_quarantined_with_file_line_and_reason(spark, catalogue):
    lake = catalogue["lake"]
    f = "cdr_data/20260301/CDR_DATA_20260301_001.dat"
    assert _quarantine(spark, lake, "cdr_data") == [
        (f, 2, "out_of_range"), (f, 3, "bad_code"), (f, 4, "bad_timestamp"), (f, 5, "field_count")]
    f = "cdr_sms/20260301/CDR_SMS_20260301_001.dat"
    assert _quarantine(spark, lake, "cdr_sms") == [(f, 2, "bad_msisdn"), (f, 3, "unknown_subscriber")]


def test_a_gbk_file_declared_utf8_quarantines_its_undecodable_lines(spark, catalogue):
    assert _quarantine(spark, catalogue["lake"], "plan") == [("plan/20260301/PLAN_20260301_001.dat", 2, "bad_encoding")]


def test_a_delivery_far_smaller_than_its_feeds_recent_days_loads_with_a_warning(spark, catalogue):
    [warning] = [r for r in catalogue["dq"] if r["check_name"].startswith("volume_drop(")]
    assert (warning["table_name"], warning["check_name"], warning["severity"], warning["success"],
            warning["unexpected_count"]) == ("landing_cdr_voice", "volume_drop(cdr_voice/20260304)", "warning", False, 5)
    assert len(_silver_ids(spark, catalogue["lake"], "cdr_voice", "cdr_id")) == 40 + 45 + 38 + 5
    assert "cdr_voice/20260304: volume drop: 5 records, 12% of the median of the 3 days delivered before (40)" in \
        catalogue["out"]


def test_the_run_keeps_data_docs_of_every_suite_it_validated(catalogue):
    docs = catalogue["lake"].data_docs
    index = f"{docs}/runs/cat-1/index.html"
    assert f"  Data Docs: {index}" in catalogue["out"].splitlines()
    html = open(index, encoding="utf-8").read()
    suites = {r["table_name"] for r in catalogue["dq"] if not r["table_name"].startswith("landing_")}
    assert {"bronze_cdr_data", "silver_cdr_data", "silver_subscriber"} <= suites
    for suite in suites:
        assert suite in html, suite


def test_a_delivery_before_its_days_subscriber_snapshot_waits_and_loads_nothing(spark, catalogue):
    [waiting] = [r for r in catalogue["runs"] if r["status"] == "WAITING"]
    assert (waiting["feed"], waiting["business_date"]) == ("survey", D5)
    assert "waiting for the subscriber snapshot of that day" in waiting["message"]
    assert "  WAITING survey 2026-03-05: waiting for the subscriber snapshot of that day" in catalogue["out"]
    assert not DeltaTable.is_deltatable(catalogue["lake"].bronze("survey"))


def test_a_file_delivered_twice_counts_its_records_once(catalogue):
    by_file = {r["source_file"]: r for r in catalogue["runs"] if r["status"] == "SUCCESS"}
    first = by_file["cdr_data/20260302/CDR_DATA_20260302_001.dat"]
    second = by_file["cdr_data/20260302/CDR_DATA_20260302_002.dat"]
    assert (first["rows_loaded"], first["rows_duplicate"]) in {(2, 0), (0, 2)}
    assert first["rows_loaded"] + second["rows_loaded"] == 2 and first["rows_duplicate"] + second["rows_duplicate"] == 2


def test_an_empty_day_loads_as_zero_records(catalogue):
    [row] = [r for r in catalogue["runs"] if r["source_file"] == "ticket/20260301/TICKET_20260301_001.dat"]
    assert row["status"] == "SUCCESS" and row["rows_read"] == 0


def test_incomplete_folders_and_skipped_days_are_on_record(catalogue):
    gaps = {(r["status"], r["feed"], r["business_date"]) for r in catalogue["runs"]
            if r["status"] in ("INCOMPLETE", "MISSING")}
    assert gaps == {("INCOMPLETE", "cdr_data", D3), ("MISSING", "cdr_sms", D2)}
    [incomplete] = [r for r in catalogue["runs"] if r["status"] == "INCOMPLETE"]
    assert "CDR_DATA_20260303.ctl" in incomplete["message"]


def test_every_loaded_file_adds_up(catalogue):
    loaded = [r for r in catalogue["runs"] if r["status"] == "SUCCESS"]
    # subscriber x4, cdr_voice x4, cdr_data D1 + D2 x2, cdr_sms D1, ticket D1, plan D1
    assert len(loaded) == 4 + 4 + 3 + 1 + 1 + 1
    for r in loaded:
        assert r["rows_read"] == r["rows_loaded"] + r["rows_quarantined"] + r["rows_duplicate"], r["source_file"]


def test_the_run_prints_a_data_quality_summary(catalogue):
    out = catalogue["out"].splitlines()
    [head] = [ln for ln in out if ln.startswith("data quality (run cat-1): ")]
    assert head.endswith("0 failed; 6 deliveries failed their file checks, 1 loaded with a warning")
    assert "  warning   landing_cdr_voice: volume_drop(cdr_voice/20260304)" in out
    assert "  delivery  landing_plan: unlisted_file(plan/20260302/PLAN_20260302_002.dat)" in out
    assert "  quarantined 7 records:" in out
    assert "    cdr_data    bad_code 1, bad_timestamp 1, field_count 1, out_of_range 1" in out
    assert "    cdr_sms     bad_msisdn 1, unknown_subscriber 1" in out
    assert "    plan        bad_encoding 1" in out
