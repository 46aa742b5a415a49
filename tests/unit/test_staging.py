"""Bronze -> silver transforms on tiny DataFrames, one rule per test."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from pyspark.sql import functions as F

from crm_pipeline.feeds import feed_spec
from crm_pipeline.ingest.load import Holders
from crm_pipeline.settings import LakeLayout
from crm_pipeline.spark import session_conf
from crm_pipeline.transforms.staging.parse import FileIndex, split_raw_lines, type_and_validate
from crm_pipeline.transforms.staging.silver import (
    holders_by_day,
    latest_version_wins,
    map_to_subscribers,
    outcome,
    with_partition_date,
)
from tests.conftest import shuffles

pytestmark = pytest.mark.spark

D = date(2026, 3, 5)
LINES = "business_date date, delivery_id string, source_file string, line_no long, raw_line string, decode_ok boolean"


def lines(spark, *raw, day=D, ok=True):
    return spark.createDataFrame([(day, "d1", "f.dat", i, r, ok) for i, r in enumerate(raw, 1)], LINES)


def typed(spark, feed, *raw, day=D):
    spec = feed_spec(feed)
    split = split_raw_lines(lines(spark, *raw, day=day), spec)
    return type_and_validate(split.where("reject_reason IS NULL"), spec)


def reasons(df):
    return [(r.reject_reason, r.reject_detail) for r in df.orderBy("line_no").collect()]


def voice(start="20260305100000", msisdn="13800000001", duration="60", direction="MO", scope="LOCAL", op="CUCC"):
    return f"V1|{msisdn}|02584001234|{direction}|{start}|{duration}|{scope}|{op}|C1|15"


def test_split_rejects_wrong_field_count_with_counts_in_detail(spark):
    out = split_raw_lines(lines(spark, "a|b|c"), feed_spec("cdr_voice")).collect()[0]
    assert (out.reject_reason, out.reject_detail) == ("field_count", "expected 10 fields, found 3")


def test_split_rejects_undecodable_lines_before_counting_fields(spark):
    out = split_raw_lines(lines(spark, "a|b", ok=False), feed_spec("cdr_voice")).collect()[0]
    assert out.reject_reason == "bad_encoding"


def test_split_turns_empty_fields_into_nulls(spark):
    row = split_raw_lines(lines(spark, "T1|13800000001|20260305100000|HOTLINE|BILLING|1||"), feed_spec("ticket")).collect()[0]
    assert row.reject_reason is None and row.resolved_time is None and row.satisfaction is None


def test_valid_voice_record_is_typed(spark):
    row = typed(spark, "cdr_voice", voice()).collect()[0]
    assert row.reject_reason is None
    assert (row.start_time, row.duration_sec, row.charge_fen) == (datetime(2026, 3, 5, 10, 0), 60, 15)


@pytest.mark.parametrize("prefixed", ["+8613800000001", "8613800000001"])
def test_country_prefix_is_removed_from_msisdns(spark, prefixed):
    row = typed(spark, "cdr_voice", voice(msisdn=prefixed)).collect()[0]
    assert row.reject_reason is None and row.msisdn == "13800000001"


@pytest.mark.parametrize(
    "line, reason, detail",
    [
        (voice(msisdn="1380000000"), "bad_msisdn", "msisdn=138*****00"),
        (voice(duration="6O"), "bad_number", "duration_sec=6O"),
        (voice(duration="-1"), "out_of_range", "duration_sec=-1"),
        (voice(start="20260230100000"), "bad_timestamp", "start_time=20260230100000"),
        (voice(direction="IN"), "bad_code", "direction=IN"),
        (voice(scope=""), "missing_value", "call_scope=<empty>"),
    ],
)
def test_each_field_defect_has_its_reason_and_a_masked_detail(spark, line, reason, detail):
    assert reasons(typed(spark, "cdr_voice", line)) == [(reason, detail)]


def test_first_failing_field_wins_when_a_record_has_two_defects(spark):
    assert reasons(typed(spark, "cdr_voice", voice(msisdn="1", duration="x")))[0][0] == "bad_msisdn"


@pytest.mark.parametrize(
    "start, ok",
    [
        ("20260302000000", True),   # business date - 3 days, first second: in
        ("20260301235959", False),  # just before the window
        ("20260305235959", True),   # last second of the business date
        ("20260306000000", False),  # the next day
    ],
)
def test_event_window_is_business_date_minus_3_to_plus_1(spark, start, ok):
    row = typed(spark, "cdr_voice", voice(start=start)).collect()[0]
    assert (row.reject_reason is None) == ok
    if not ok:
        assert row.reject_reason == "outside_window"


def test_ticket_window_follows_its_last_change_not_its_creation(spark):
    old_resolved_now = "T1|13800000001|20260220100000|HOTLINE|BILLING|1|20260305090000|5"
    old_still_open = "T2|13800000001|20260220100000|HOTLINE|BILLING|1||"
    out = typed(spark, "ticket", old_resolved_now, old_still_open).orderBy("line_no").collect()
    assert [r.reject_reason for r in out] == [None, "outside_window"]


def test_is_complaint_flag_must_be_0_or_1(spark):
    assert reasons(typed(spark, "ticket", "T1|13800000001|20260305100000|HOTLINE|BILLING|Y||"))[0][0] == "bad_code"


def test_survey_scores_outside_1_to_10_are_out_of_range(spark):
    assert reasons(typed(spark, "survey", "R1|13800000001|20260305|11|5|5|5"))[0] == ("out_of_range", "service_score=11")


def test_bill_month_after_the_bill_run_is_outside_window(spark):
    line = "B1|A1|S1|202604|MONTHLY_FEE|5800|20260420|"
    assert reasons(typed(spark, "bill", line))[0][0] == "outside_window"


def test_late_record_is_partitioned_by_its_own_event_date(spark):
    row = with_partition_date(typed(spark, "cdr_voice", voice(start="20260303120000")), feed_spec("cdr_voice")).collect()[0]
    assert row.event_date == date(2026, 3, 3) and row.business_date == D


SNAP = "snapshot_date date, subscriber_id string, msisdn string, status string, status_date date, activation_date date"


def test_a_reassigned_number_maps_to_its_holder_on_each_day(spark):
    snap = spark.createDataFrame(
        [
            (date(2026, 3, 1), "OLD", "13900000009", "ACTIVE", date(2024, 1, 1), date(2024, 1, 1)),
            (date(2026, 3, 2), "OLD", "13900000009", "TERMINATED", date(2026, 3, 2), date(2024, 1, 1)),
            (date(2026, 3, 3), "OLD", "13900000009", "TERMINATED", date(2026, 3, 2), date(2024, 1, 1)),
            (date(2026, 3, 3), "NEW", "13900000009", "ACTIVE", date(2026, 3, 3), date(2026, 3, 3)),
        ],
        SNAP,
    )
    recs = spark.createDataFrame(
        [(date(2026, 3, d), "13900000009", None, None) for d in (1, 2, 3)],
        "event_date date, msisdn string, reject_reason string, reject_detail string",
    )
    out = map_to_subscribers(recs, holders_by_day(snap), feed_spec("cdr_voice")).orderBy("event_date").collect()
    assert [r.subscriber_id for r in out] == ["OLD", "OLD", "NEW"]


def test_a_number_nobody_holds_that_day_is_an_unknown_subscriber(spark):
    snap = spark.createDataFrame([(date(2026, 3, 1), "S1", "13800000001", "ACTIVE", date(2025, 1, 1), date(2025, 1, 1))], SNAP)
    recs = spark.createDataFrame([(date(2026, 3, 1), "13700000000", None, None)],
                                 "event_date date, msisdn string, reject_reason string, reject_detail string")
    out = map_to_subscribers(recs, holders_by_day(snap), feed_spec("cdr_voice")).collect()[0]
    assert out.reject_reason == "unknown_subscriber" and "137******00" in out.reject_detail


def test_the_holders_are_built_once_per_set_of_days_and_broadcast_while_they_fit(spark, tmp_path, monkeypatch):
    """The feeds of an ingest share the holders of a set of days: built once, cached, broadcast up
    to Holders.BROADCAST_ROWS rows (whatever Spark's size estimates say), joined by a shuffle above;
    either way each record gets the holder of its day. A feed with fewer days gets those days of
    the cached holders."""
    lake = LakeLayout(str(tmp_path / "lake"))
    spark.createDataFrame([
        (date(2026, 3, 1), "OLD", "13900000009", "ACTIVE", date(2024, 1, 1), date(2024, 1, 1)),
        (date(2026, 3, 2), "OLD", "13900000009", "TERMINATED", date(2026, 3, 2), date(2024, 1, 1)),
        (date(2026, 3, 3), "NEW", "13900000009", "ACTIVE", date(2026, 3, 3), date(2026, 3, 3)),
    ], SNAP).write.format("delta").partitionBy("snapshot_date").save(lake.silver("subscriber"))
    recs = spark.createDataFrame([(date(2026, 3, d), "13900000009", None, None) for d in (1, 2, 3)],
                                 "event_date date, msisdn string, reject_reason string, reject_detail string")
    days = {date(2026, 3, d) for d in (1, 2, 3)}
    holders = Holders(spark, lake)
    builds = []

    def counted(snapshot):
        builds.append({r.snapshot_date for r in snapshot.select("snapshot_date").distinct().collect()})
        return holders_by_day(snapshot)

    monkeypatch.setattr("crm_pipeline.ingest.load.holders_by_day", counted)

    def mapped(frame):
        out = map_to_subscribers(recs, frame, feed_spec("cdr_voice")).orderBy("event_date")
        found = [r.subscriber_id for r in out.collect()]
        return found, "BroadcastHashJoin" in out._jdf.queryExecution().executedPlan().toString()

    with session_conf(spark, {"spark.sql.autoBroadcastJoinThreshold": "-1"}):  # no broadcast but the hint
        shared = holders.on(days)
        assert holders.on(set(days)) is shared  # once for every feed
        assert holders.on(days | {date(2026, 2, 27)}) is shared  # a day without a snapshot adds none
        fewer = holders.on({date(2026, 3, 1), date(2026, 3, 3)})  # taken from the cached ones, of those days only
        assert mapped(fewer) == (["OLD", None, "NEW"], True)
        assert holders.on({date(2026, 3, 3), date(2026, 3, 1)}) is fewer
        assert builds == [days]  # the snapshot was read once
        assert mapped(shared) == (["OLD", "OLD", "NEW"], True)
        holders.release()
        monkeypatch.setattr(Holders, "BROADCAST_ROWS", 2)  # the 3 holder rows no longer fit
        rebuilt = holders.on(days)
        assert rebuilt is not shared
        assert mapped(rebuilt) == (["OLD", "OLD", "NEW"], False)
        holders.release()


def _versions(spark, rows):
    return spark.createDataFrame(
        rows, "ticket_id string, business_date date, source_file string, line_no long, reject_reason string, bill_month date"
    )


def test_the_latest_delivery_wins_and_earlier_versions_are_duplicates(spark):
    recs = _versions(spark, [
        ("T1", date(2026, 3, 1), "a", 1, None, None),
        ("T1", date(2026, 3, 3), "c", 1, None, None),
        ("T1", date(2026, 3, 2), "b", 1, None, None),
        ("T1", date(2026, 3, 4), "d", 1, "bad_code", None),
    ])
    out = latest_version_wins(recs, feed_spec("ticket"))
    got = sorted((r.source_file, r.o) for r in out.select("source_file", outcome().alias("o")).collect())
    assert got == [("a", "duplicate"), ("b", "duplicate"), ("c", "loaded"), ("d", "quarantined")]


def test_records_numbered_by_their_file_rank_their_versions_as_the_file_names_do(spark):
    """The silver stage carries a record's file as a number (`FileIndex`): the same winners as by the
    names (B_9 sorts after B_10), and the lineage strings put back as they were."""
    spec = feed_spec("cdr_voice")
    delivered = [("cdr_voice/20260305/B_9.dat", "d2"), ("cdr_voice/20260305/B_10.dat", "d2"),
                 ("cdr_voice/20260305/A.dat", "d1")]
    rows = [(D, delivery, name, 7, voice(duration=str(60 + i)), True) for i, (name, delivery) in enumerate(delivered)]
    split = split_raw_lines(spark.createDataFrame(rows, LINES), spec)
    files = FileIndex(delivered)  # listed out of name order: numbered in name order all the same
    by_name = latest_version_wins(with_partition_date(type_and_validate(split, spec), spec), spec)
    by_number = latest_version_wins(with_partition_date(type_and_validate(split, spec, files), spec), spec)
    assert "source_file" not in by_number.columns and "delivery_id" not in by_number.columns
    expected = sorted(by_name.select("business_date", "delivery_id", "source_file", "line_no", "duration_sec",
                                     "is_winner").collect())
    got = sorted(by_number.select(*files.lineage(), "duration_sec", "is_winner").collect())
    assert got == expected
    assert [(r.source_file, r.duration_sec) for r in expected if r.is_winner] == [("cdr_voice/20260305/B_9.dat", 60)]
    with pytest.raises(Exception, match="a file not in the index"):
        type_and_validate(split, spec, FileIndex(delivered[1:])).collect()


def test_an_extended_file_index_keeps_the_numbers_of_the_batch_it_was_made_for():
    """A rebuild adds the other deliveries' files (other business dates) after the batch's, whose
    records were numbered when read; a file listed twice keeps its number."""
    batch = FileIndex([("t/20260305/B.dat", "d5"), ("t/20260305/A.dat", "d5")])
    more = batch.extended([("t/20260301/Z.dat", "d1"), ("t/20260305/A.dat", "d5"), ("t/20260302/C.dat", "d2")])
    assert more.names == ["t/20260305/A.dat", "t/20260305/B.dat", "t/20260301/Z.dat", "t/20260302/C.dat"]
    assert more.deliveries == ["d5", "d5", "d1", "d2"]
    with pytest.raises(ValueError, match="two delivery ids"):
        FileIndex([("t/20260305/A.dat", "d5"), ("t/20260305/A.dat", "d6")])


AWKWARD = ["a'b", "c\\d", "e\\'f", 'g"h', "中文.dat", "tab\there", "$x{y}", "", "it's\\"]


def test_literals_spelled_in_one_expression_equal_those_of_lit(spark):
    """`isin` and `literal_array` spell their values in SQL (one call into the JVM): quotes,
    backslashes, non-ASCII strings, dates and numbers come back as `F.lit` gives them."""
    from crm_pipeline.columns import isin, literal_array

    strings = spark.createDataFrame([(v,) for v in [*AWKWARD, "other", None]], "s string")
    want = strings.select("s", F.col("s").isin(AWKWARD).alias("hit")).collect()
    assert strings.select("s", isin("s", AWKWARD).alias("hit")).collect() == want
    assert [r.hit for r in want] == [True] * len(AWKWARD) + [False, None]
    assert strings.select(isin("s", []).alias("hit")).distinct().collect()[0].hit is False
    with_null = [*AWKWARD[:2], None]
    assert strings.select(isin("s", with_null).alias("hit")).collect() == \
        strings.select(F.col("s").isin(with_null).alias("hit")).collect()
    days = spark.createDataFrame([(date(2026, 3, d),) for d in (1, 5, 31)], "d date")
    assert [r.hit for r in days.select(isin("d", [D, date(2026, 3, 31)]).alias("hit")).collect()] == [False, True, True]
    values = [*AWKWARD, D, 7, -0.1, 1e-7, True]
    got = spark.range(1).select(*[literal_array([v]).alias(f"c{i}") for i, v in enumerate(values)]).collect()[0]
    assert [got[f"c{i}"] for i in range(len(values))] == [[v] for v in values]
    assert spark.range(1).select(literal_array([]).alias("e")).collect()[0].e == []


def test_file_names_of_any_spelling_come_back_as_the_lineage_of_their_records(spark):
    files = FileIndex([(f"t/20260305/{name}", f"d{i}") for i, name in enumerate(AWKWARD)])
    numbered = spark.createDataFrame([(D, i, 1) for i in range(len(AWKWARD))],
                                     "business_date date, _file int, line_no int")
    got = [(r.source_file, r.delivery_id) for r in numbered.orderBy("_file").select(*files.lineage()).collect()]
    assert got == list(zip(files.names, files.deliveries))
    names = spark.createDataFrame([(n,) for n in files.names], "n string")
    assert [r.k for r in names.select(files.number(F.col("n")).alias("k")).collect()] == list(range(len(AWKWARD)))


def test_a_bill_month_comes_whole_from_its_latest_delivery(spark):
    bills = spark.createDataFrame(
        [
            ("L1", date(2026, 3, 2), "run", 1, None, date(2026, 2, 1)),
            ("L2", date(2026, 3, 2), "run", 2, None, date(2026, 2, 1)),   # dropped by the correction
            ("L1", date(2026, 3, 10), "fix", 1, None, date(2026, 2, 1)),
        ],
        "bill_line_id string, business_date date, source_file string, line_no long, reject_reason string, bill_month date",
    )
    out = latest_version_wins(bills, feed_spec("bill")).where(F.col("is_winner")).collect()
    assert [(r.bill_line_id, r.source_file) for r in out] == [("L1", "fix")]


def test_the_ranked_batch_stays_hashed_by_its_key_for_the_comparison_with_stored_versions(spark, tmp_path):
    """The ranking shuffles the batch by its key once; the join with silver's stored versions on that
    key (a sort-merge join when they are too many to broadcast) shuffles only the stored side."""
    def stored_as_files(frame, name: str):  # a file scan, as bronze and silver are read
        frame.write.parquet(str(tmp_path / name))
        return spark.read.parquet(str(tmp_path / name))

    recs = stored_as_files(_versions(spark, [("T1", date(2026, 3, 1), "a", 1, None, None),
                                             ("T2", date(2026, 3, 1), "a", 2, "bad", None)]), "batch")
    stored = stored_as_files(spark.createDataFrame([("T1", date(2026, 2, 27))], "ticket_id string, stored_date date"),
                             "stored")
    with session_conf(spark, {"spark.sql.autoBroadcastJoinThreshold": "-1", "spark.sql.adaptive.enabled": "false"}):
        joined = latest_version_wins(recs, feed_spec("ticket")).join(stored, ["ticket_id"], "left")
        assert shuffles(joined) == 2
        assert sorted((r.ticket_id, r.is_winner, r.stored_date) for r in joined.collect()) == [
            ("T1", True, date(2026, 2, 27)), ("T2", False, None)]


def test_a_small_batchs_bronze_rows_read_through_delta_rs_are_those_its_checks_read_in_spark(spark, tmp_path):
    from crm_pipeline.columns import isin
    from crm_pipeline.ingest.load import _valid, _valid_in_memory

    path = str(tmp_path / "bronze")
    rows = [(date(2026, 3, d), f"d{d}", f"f{d}.dat", n, None if n == 2 else "13900000009",
             "bad_field_count" if n == 3 else None) for d in (1, 2, 3) for n in (1, 2, 3)]
    rows.append((date(2026, 3, 2), "d0", "f0.dat", 1, "13900000009", None))  # an earlier delivery of the day
    spark.createDataFrame(rows, "business_date date, delivery_id string, source_file string, line_no long, "
                                "msisdn string, reject_reason string").write.format("delta").partitionBy(
        "business_date").save(path)
    days, deliveries = [date(2026, 3, 1), date(2026, 3, 2)], ["d1", "d2"]
    bronze = spark.read.format("delta").load(path)
    want = [r.asDict() for r in _valid(bronze.where(isin("business_date", days) & isin("delivery_id", deliveries)))
            .collect()]
    got = _valid_in_memory(path, days, deliveries).to_pylist()

    def key(row):
        return row["business_date"], row["delivery_id"], row["line_no"]

    assert sorted(got, key=key) == sorted(want, key=key)
    assert len(got) == 4 and {r["msisdn"] for r in got} == {None, "13900000009"}
