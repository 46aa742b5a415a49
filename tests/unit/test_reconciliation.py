"""Billed against rated, on a hand-computed month."""

from __future__ import annotations

from datetime import date

import pytest

from crm_pipeline.transforms.marts.reconciliation import billing_reconciliation

pytestmark = pytest.mark.spark

M, LATER = date(2026, 3, 1), date(2026, 4, 1)
BILLS = "bill_month_date date, subscriber_id string, item_code string, amount_fen long"
USAGE = "usage_date date, subscriber_id string, voice_charge_fen long, sms_charge_fen long, data_charge_fen long"


def test_billed_and_rated_charges_per_item_in_total_and_per_subscriber(spark):
    bills = spark.createDataFrame([
        (M, "S1", "VOICE", 100), (M, "S1", "SMS", 10), (M, "S1", "MONTHLY_FEE", 5800), (M, "S2", "VOICE", 50),
        (LATER, "S1", "VOICE", 999),
    ], BILLS)
    usage = spark.createDataFrame([
        (date(2026, 3, 1), "S1", 60, 10, 0), (date(2026, 3, 31), "S1", 40, 0, 0),
        (date(2026, 3, 9), "S2", 30, 0, 0),   # 20 fen of S2's calls never rated here (quarantined, say)
        (date(2026, 3, 9), "S3", 0, 0, 5),    # rated data, not on any bill
        (date(2026, 4, 1), "S1", 999, 0, 0),  # next month
    ], USAGE)
    got = {r.item: r.asDict() for r in billing_reconciliation(bills, usage, [M]).collect()}
    assert set(got) == {"VOICE", "SMS", "DATA"}
    assert got["VOICE"] == dict(month=M, item="VOICE", billed_fen=150, rated_fen=130, difference_fen=20,
                                difference_share=pytest.approx(20 / 130), subscribers=2, subscribers_differing=1)
    assert got["SMS"] == dict(month=M, item="SMS", billed_fen=10, rated_fen=10, difference_fen=0,
                              difference_share=0.0, subscribers=1, subscribers_differing=0)
    assert got["DATA"] == dict(month=M, item="DATA", billed_fen=0, rated_fen=5, difference_fen=-5,
                               difference_share=-1.0, subscribers=1, subscribers_differing=1)


def test_marts_naming_subscribers_or_groups_missing_from_subscriber_month_are_counted(spark):
    from crm_pipeline.pipeline.monthly import reconciliation_checks

    sm = spark.createDataFrame([(M, "S1", "G1", "HIGH_VALUE"), (M, "S2", None, "DEVELOP"), (M, "S3", None, None),
                                (LATER, "S1", "G1", "HIGH_VALUE")],
                               "month date, subscriber_id string, group_id string, value_segment string")
    per_subscriber = "month date, subscriber_id string"
    tables = {
        "subscriber_month": sm,
        "segment_summary": spark.createDataFrame([(M, 1), (M, 1), (LATER, 1)], "month date, subscribers long"),
        "churn_watchlist": spark.createDataFrame([(M, "S1"), (M, "S9"), (LATER, "S2")], per_subscriber),
        "lost_customers": spark.createDataFrame([(M, "S2")], per_subscriber),
        "migration_candidates": spark.createDataFrame([], per_subscriber),
        "key_account_month": spark.createDataFrame([(M, "G1"), (LATER, "G2")], "month date, group_id string"),
    }
    got = {r.month: r.asDict() for r in reconciliation_checks(tables).collect()}
    assert got[M] == dict(month=M, segment_gap=0, churn_watchlist_orphans=1, lost_customers_orphans=0,
                          migration_candidates_orphans=0, key_account_month_orphans=0)
    assert got[LATER] == dict(month=LATER, segment_gap=0, churn_watchlist_orphans=1, lost_customers_orphans=0,
                              migration_candidates_orphans=0, key_account_month_orphans=1)
    tables["segment_summary"] = spark.createDataFrame([(M, 3), (LATER, 1)], "month date, subscribers long")
    assert {r.month: r.segment_gap for r in reconciliation_checks(tables).collect()} == {M: 1, LATER: 0}
