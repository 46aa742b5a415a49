"""Daily rollups and the keyed msisdn hash, on tiny frames."""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

import pytest
from pyspark.sql import functions as F

from crm_pipeline.columns import hmac_sha256, hmac_sha256_hex
from crm_pipeline.transforms.intermediate.daily_rollups import daily_contacts, daily_usage_by_subscriber

pytestmark = pytest.mark.spark
D = date(2026, 3, 5)


@pytest.mark.parametrize("key", ["demo-key", "k" * 100, "密钥"])
def test_hmac_in_spark_equals_pythons_hmac(spark, key):
    df = spark.createDataFrame([("13800000001",), ("8613912345678",)], "m string")
    got = df.select(hmac_sha256_hex(F.col("m"), key).alias("h"), hmac_sha256(F.col("m"), key).alias("b")).collect()
    want = [hmac.new(key.encode(), m.encode(), hashlib.sha256) for m in ("13800000001", "8613912345678")]
    assert [r.h for r in got] == [h.hexdigest() for h in want]
    assert [bytes(r.b) for r in got] == [h.digest() for h in want]


def _events(spark):
    voice = spark.createDataFrame(
        [("S1", D, "MO", 65, "CUCC", 10, "13900000001"), ("S1", D, "MT", 55, "ON_NET", 0, "13900000001"),
         ("S2", D, "MO", 30, "ON_NET", 5, "13800000001")],
        "subscriber_id string, event_date date, direction string, duration_sec long, other_operator string, charge_fen long, other_party string",
    )
    sms = spark.createDataFrame(
        [("S1", D, "MO", "CTCC", 1, "13900000002")],
        "subscriber_id string, event_date date, direction string, other_operator string, charge_fen long, other_party string",
    )
    data = spark.createDataFrame(
        [("S1", D, 100, 900, "5G", 0), ("S1", D, 10, 90, "4G", 0)],
        "subscriber_id string, event_date date, uplink_bytes long, downlink_bytes long, rat string, charge_fen long",
    )
    recharge = spark.createDataFrame(
        [("S1", D, "RECHARGE", 5000), ("S1", D, "REFUND", -1000), ("S1", D, "BILL_PAYMENT", 8800)],
        "subscriber_id string, event_date date, txn_type string, amount_fen long",
    )
    ticket = spark.createDataFrame(
        [("S1", D, True, "REGULATOR"), ("S1", D, False, "HOTLINE")],
        "subscriber_id string, event_date date, is_complaint boolean, channel string",
    )
    return voice, sms, data, recharge, ticket


def test_daily_usage_sums_every_feed_per_subscriber_and_day(spark):
    rows = {r.subscriber_id: r for r in daily_usage_by_subscriber(*_events(spark)).collect()}
    s1 = rows["S1"]
    assert (s1.voice_calls, s1.voice_sec, s1.voice_mo_sec, s1.voice_offnet_sec) == (2, 120, 65, 65)
    assert (s1.sms_count, s1.sms_offnet_count) == (1, 1)
    assert (s1.data_sessions, s1.data_bytes, s1.data_5g_bytes) == (2, 1100, 1000)
    assert (s1.recharge_fen, s1.bill_payment_fen, s1.recharge_count) == (4000, 8800, 1)
    assert (s1.tickets, s1.complaints, s1.regulator_complaints) == (2, 1, 1)
    assert (rows["S2"].voice_sec, rows["S2"].sms_count, rows["S2"].data_bytes) == (30, 0, 0)


def test_rollup_reconciliation_finds_a_record_the_rollup_lacks(spark):
    from crm_pipeline.pipeline.rollups import rollup_reconciliation
    from crm_pipeline.quality import gx

    voice, sms, data, recharge, ticket = _events(spark)
    events = dict(cdr_voice=voice, cdr_sms=sms, cdr_data=data, ticket=ticket)
    usage = daily_usage_by_subscriber(voice, sms, data, recharge, ticket)
    later = date(2026, 3, 6)  # a day rebuilt with no record at all
    good = rollup_reconciliation(spark, events, usage, [D, later])
    assert {tuple(r) for r in good.collect()} == {(D, 0, 0, 0, 0), (later, 0, 0, 0, 0)}
    assert all(r.success for r in gx.validate(good, "gold_rollup_reconciliation", {"days": 2}))
    # silver gained a data session after the rollup was written: the day's data gap is 1
    extra = data.unionByName(spark.createDataFrame([("S2", D, 1, 1, "4G", 0)], data.schema))
    bad = rollup_reconciliation(spark, dict(events, cdr_data=extra), usage, [D, later])
    assert {tuple(r) for r in bad.collect()} == {(D, 0, 0, 1, 0), (later, 0, 0, 0, 0)}
    failed = [r for r in gx.validate(bad, "gold_rollup_reconciliation", {"days": 2}) if not r.success]
    assert [(r.check_name, r.unexpected_count, r.severity) for r in failed] == [
        ("expect_column_values_to_be_between(cdr_data_gap)", 1, "blocking")]


def test_daily_contacts_aggregate_calls_and_sms_per_hashed_other_party(spark):
    voice, sms, *_ = _events(spark)
    rows = daily_contacts(voice, sms, "k").where("subscriber_id = 'S1'").orderBy("calls").collect()
    key = hmac.new(b"k", b"13900000001", hashlib.sha256).digest()  # msisdn_key's bytes
    assert [(r.other_party_key == key, r.calls, r.sms, r.voice_sec) for r in rows] == [(False, 0, 1, 0), (True, 2, 0, 120)]


CONTACTS_DDL = "subscriber_id string, usage_date date, other_party_key binary, other_operator string, calls long"


def test_the_largest_operator_code_by_rank_equals_the_largest_string_and_aggregates_by_hash(spark):
    from itertools import combinations_with_replacement

    from crm_pipeline.columns import code_at, code_rank
    from crm_pipeline.transforms.intermediate.daily_rollups import operator_codes

    codes = operator_codes()
    assert {"ON_NET", "CMCC", "CUCC", "CTCC", "FIXED", "INTL"} <= set(codes)
    pairs = list(combinations_with_replacement(codes, 2))
    rows = [(i, c) for i, pair in enumerate(pairs) for c in pair] + [(len(pairs), None)]
    df = spark.createDataFrame(rows, "g int, op string")
    by_rank = df.groupBy("g").agg(F.max(code_rank(F.col("op"), codes)).alias("r")).select(
        "g", code_at(F.col("r"), codes).alias("op"))
    assert "SortAggregate" not in by_rank._jdf.queryExecution().executedPlan().toString()
    by_string = df.groupBy("g").agg(F.max("op").alias("op"))
    assert sorted(by_rank.collect()) == sorted(by_string.collect())
    assert by_rank.where(F.col("g") == len(pairs)).first().op is None



def test_contact_months_add_up_the_days_of_each_month(spark):
    from crm_pipeline.transforms.intermediate.daily_rollups import contact_months

    rows = [("S1", date(2026, 3, 9), b"k1", "CUCC", 0), ("S1", date(2026, 3, 2), b"k1", "ON_NET", 2),
            ("S1", date(2026, 3, 30), b"k1", "CUCC", 1), ("S1", date(2026, 4, 1), b"k1", "CUCC", 0),
            ("S1", date(2026, 3, 2), b"k2", "CTCC", 0)]
    got = {(r.month, bytes(r.other_party_key)): (r.days, r.first_day, r.calls, r.call_operator)
           for r in contact_months(spark.createDataFrame(rows, CONTACTS_DDL)).collect()}
    assert got == {
        (date(2026, 3, 1), b"k1"): (3, date(2026, 3, 2), 3, "ON_NET"),
        (date(2026, 4, 1), b"k1"): (1, date(2026, 4, 1), 0, None),
        (date(2026, 3, 1), b"k2"): (1, date(2026, 3, 2), 0, None),
    }


def test_monthly_pairs_follow_a_rewritten_day_of_their_month(spark, tmp_path):
    from crm_pipeline.io import delta
    from crm_pipeline.pipeline.rollups import month_summaries, replace_daily
    from crm_pipeline.settings import LakeLayout

    lake = LakeLayout(str(tmp_path / "lake"))
    march, april = date(2026, 3, 1), date(2026, 4, 1)
    days = [date(2026, 3, 2), date(2026, 4, 2)]
    replace_daily(spark, lake, "daily_contacts", spark.createDataFrame(
        [("S1", days[0], b"k1", "CUCC", 1), ("S1", days[1], b"k1", "CUCC", 1)], CONTACTS_DDL), days)

    def pairs():
        return sorted((r.month, bytes(r.other_party_key), r.days)
                      for r in month_summaries(spark, lake, "contact_months", [march, april]).collect())

    assert pairs() == [(march, b"k1", 1), (april, b"k1", 1)]
    stored = delta.read(spark, lake.gold("contact_months")).count()
    # a late record for March 2 adds a party: March's pairs are rebuilt, April's kept as stored
    replace_daily(spark, lake, "daily_contacts", spark.createDataFrame(
        [("S1", days[0], b"k1", "CUCC", 1), ("S1", days[0], b"k2", "ON_NET", 0)], CONTACTS_DDL), days[:1])
    assert delta.read(spark, lake.gold("contact_months")).count() == stored - 1
    assert pairs() == [(march, b"k1", 1), (march, b"k2", 1), (april, b"k1", 1)]


def test_a_lake_with_hex_contact_keys_has_them_rewritten_as_bytes_once_by_each_tables_writer(spark, tmp_path):
    """Lakes written before the contact keys were stored as bytes hold them as hex text, which a
    write of bytes would not fit. The monthly stage rewrites the monthly pairs first, and reads the
    daily contacts' hex as bytes until the next rollup rewrites them; each rewrite keeps every row
    (the keys' bytes those of their hex) and happens once."""
    from crm_pipeline.io import delta, delta_rs
    from crm_pipeline.pipeline.rollups import contact_keys_as_bytes, month_summaries, replace_daily
    from crm_pipeline.settings import LakeLayout
    from crm_pipeline.transforms.intermediate.daily_rollups import contact_months

    lake = LakeLayout(str(tmp_path / "lake"))
    march, april = date(2026, 3, 1), date(2026, 4, 1)
    days = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 4, 2)]
    hex_rows = [("S1", days[0], "0a0b", "CUCC", 1), ("S1", days[1], "0a0b", "ON_NET", 0),
                ("S2", days[1], "ff", "CTCC", 2), ("S2", days[2], "ff", "CTCC", 1)]
    old = spark.createDataFrame(hex_rows, CONTACTS_DDL.replace("binary", "string"))  # as an earlier version wrote
    delta.replace_where(old, lake.gold("daily_contacts"), delta.in_predicate("usage_date", days), ["usage_date"])
    delta.replace_where(contact_months(old.where(F.col("usage_date") < april)), lake.gold("contact_months"),
                        delta.in_predicate("month", [march]), ["month"])  # April's pairs not built yet

    def key_types():
        return [delta_rs.column_type(lake.gold(t), "other_party_key") for t in ("daily_contacts", "contact_months")]

    def pairs():
        return {(r.month, r.subscriber_id, bytes(r.other_party_key)): (r.days, r.first_day, r.calls, r.call_operator)
                for r in month_summaries(spark, lake, "contact_months", [march, april]).collect()}

    assert key_types() == ["string", "string"]
    march_pairs = {(march, "S1", b"\x0a\x0b"): (2, days[0], 1, "CUCC"), (march, "S2", b"\xff"): (1, days[1], 2, "CTCC")}
    assert pairs() == {**march_pairs, (april, "S2", b"\xff"): (1, days[2], 1, "CTCC")}  # April from the hex
    assert key_types() == ["string", "binary"]

    late = date(2026, 4, 3)  # a rollup of another day of April: March's pairs stay as stored
    replace_daily(spark, lake, "daily_contacts", spark.createDataFrame(
        [("S1", late, bytes.fromhex("0a0b"), "ON_NET", 1)], CONTACTS_DDL), [late])
    assert key_types() == ["binary", "binary"]
    daily = {(r.subscriber_id, r.usage_date, bytes(r.other_party_key), r.other_operator, r.calls)
             for r in delta.read(spark, lake.gold("daily_contacts")).select(*old.columns).collect()}
    assert daily == {(s, d, bytes.fromhex(k), op, c) for s, d, k, op, c in hex_rows} | {
        ("S1", late, bytes.fromhex("0a0b"), "ON_NET", 1)}
    assert pairs() == {**march_pairs, (april, "S2", b"\xff"): (1, days[2], 1, "CTCC"),
                       (april, "S1", b"\x0a\x0b"): (1, late, 1, "ON_NET")}
    said = []
    for table in ("daily_contacts", "contact_months"):
        contact_keys_as_bytes(spark, lake, table, said.append)
    assert said == []  # once


def test_the_daily_contacts_are_hashed_by_subscriber_before_the_month_is_aggregated(spark, tmp_path):
    """A contact's days sit in different files (one day each): an aggregation inside the reading
    tasks would reduce nothing, so the daily rows are hashed by subscriber first; the pairs are
    those the aggregation gives straight."""
    from crm_pipeline.io import delta
    from crm_pipeline.pipeline.rollups import replace_daily, summary_rows
    from crm_pipeline.settings import LakeLayout
    from crm_pipeline.transforms.intermediate.daily_rollups import contact_months

    lake = LakeLayout(str(tmp_path / "lake"))
    march = date(2026, 3, 1)
    days = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 4, 1)]
    replace_daily(spark, lake, "daily_contacts", spark.createDataFrame(
        [("S1", days[0], b"k1", "CUCC", 1), ("S1", days[1], b"k1", "ON_NET", 2), ("S2", days[1], b"k1", "CUCC", 0),
         ("S1", days[2], b"k1", "CUCC", 1)], CONTACTS_DDL), days)
    rows = summary_rows(spark, lake, "contact_months", [march])
    plan = rows._jdf.queryExecution().executedPlan().toString()
    below = plan[plan.index("Exchange"):]
    assert below.startswith("Exchange hashpartitioning(subscriber_id") and "Aggregate" not in below, plan
    daily = delta.read(spark, lake.gold("daily_contacts"))
    straight = contact_months(daily.where(F.col("usage_date") < date(2026, 4, 1)))
    assert sorted(rows.collect()) == sorted(straight.collect()) and rows.count() == 2


def test_monthly_activity_follows_a_rewritten_day_of_its_month(spark, tmp_path):
    from crm_pipeline.io import delta
    from crm_pipeline.pipeline.rollups import month_summaries, replace_daily
    from crm_pipeline.settings import LakeLayout

    lake = LakeLayout(str(tmp_path / "lake"))
    march, april = date(2026, 3, 1), date(2026, 4, 1)
    ddl = ("subscriber_id string, usage_date date, voice_mo_sec long, sms_mo_count long, data_sessions long, "
           "recharge_count long, regulator_complaints long")
    days = [date(2026, 3, 5), date(2026, 4, 2)]
    replace_daily(spark, lake, "daily_usage_by_subscriber", spark.createDataFrame(
        [("S1", days[0], 60, 0, 0, 1, 0), ("S1", days[1], 0, 0, 0, 1, 1)], ddl), days)

    def activity():
        return sorted((r.month, r.last_active, tuple(r.recharge_dates), r.regulator_complaints)
                      for r in month_summaries(spark, lake, "activity_months", [march, april]).collect())

    assert activity() == [(march, days[0], (days[0],), 0), (april, None, (days[1],), 1)]
    # a late top-up on March 20 rewrites that day: March is summarised again, April kept as stored
    late = date(2026, 3, 20)
    replace_daily(spark, lake, "daily_usage_by_subscriber", spark.createDataFrame(
        [("S1", late, 0, 0, 1, 1, 0)], ddl), [late])
    assert delta.read(spark, lake.gold("activity_months")).count() == 1
    assert activity() == [(march, late, (days[0], late), 0), (april, None, (days[1],), 1)]
