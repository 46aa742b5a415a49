"""Marts around the value appraisal on tiny frames, each expected value worked out by hand:
payment behaviour, revenue concentration, segment summary and migration, key accounts, CLV."""

from __future__ import annotations

import math
from datetime import date

import pytest

from crm_pipeline.pipeline.settings import analytics_settings
from crm_pipeline.transforms.intermediate.payment_behaviour import account_bills, payment_behaviour
from crm_pipeline.transforms.marts.clv import ClvSettings, clv_exposures, fit_clv_models, with_clv
from crm_pipeline.transforms.marts.concentration import revenue_concentration, revenue_lorenz
from crm_pipeline.transforms.marts.key_accounts import key_account_month
from crm_pipeline.transforms.marts.segments import segment_migration, segment_summary

pytestmark = pytest.mark.spark

JAN, FEB, MAR, APR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1), date(2026, 4, 1)


def test_payments_settle_the_oldest_bill_first_and_leave_arrears(spark):
    bills = spark.createDataFrame([
        ("A1", JAN, 10000, date(2026, 2, 20), None),
        ("A1", FEB, 8000, date(2026, 3, 20), None),
        ("A1", FEB, -1000, date(2026, 3, 20), None),
        ("A2", FEB, 5000, date(2026, 3, 20), date(2026, 3, 1)),  # paid at the bill run
    ], "account_id string, bill_month date, amount_fen long, due_date date, paid_date date")
    payments = spark.createDataFrame([
        ("A1", date(2026, 3, 5), 10000),  # January's bill, late
        ("A1", date(2026, 3, 25), 5000),
    ], "account_id string, pay_date date, amount_fen long")
    months = spark.createDataFrame([(MAR, date(2026, 3, 31))], "month date, month_end date")
    got = {r.account_id: r for r in payment_behaviour(account_bills(bills), payments, months).collect()}
    # A1: Jan due 02-20 with nothing paid by then: late; Feb (7000) due 03-20: 10000 paid by then,
    # but Jan's 10000 comes first, so 10000 < 17000: late. Arrears 17000 - 15000 = 2000.
    assert (got["A1"].bills_due, got["A1"].bills_on_time, got["A1"].arrears_fen) == (2, 0, 2000)
    assert (got["A2"].bills_due, got["A2"].on_time_share, got["A2"].arrears_fen) == (1, 1.0, 0)


def test_an_account_bill_settles_the_lines_paid_by_its_latest_due_date(spark):
    bills = spark.createDataFrame([
        ("A1", MAR, 3000, date(2026, 4, 10), date(2026, 4, 1)),
        ("A1", MAR, 2000, date(2026, 4, 20), date(2026, 4, 15)),  # after one line's due date, not the latest
        ("A1", MAR, 1500, date(2026, 4, 10), date(2026, 4, 21)),  # after every due date
        ("A1", MAR, 700, date(2026, 4, 10), None),
        ("A1", MAR, -200, date(2026, 4, 10), date(2026, 4, 1)),  # a discount paid with the bill
        ("A1", FEB, 900, date(2026, 3, 20), date(2026, 4, 1)),  # late
        ("A2", MAR, 400, None, date(2026, 4, 1)),  # no due date: nothing counts as settled
    ], "account_id string, bill_month date, amount_fen long, due_date date, paid_date date")
    got = {(r.account_id, r.bill_month): r for r in account_bills(bills).collect()}
    a1 = got[("A1", MAR)]
    assert (a1.due_date, a1.billed_fen, a1.settled_fen, a1.outstanding_fen) == (date(2026, 4, 20), 7000, 4800, 2200)
    assert (got[("A1", FEB)].settled_fen, got[("A1", FEB)].outstanding_fen) == (0, 900)
    a2 = got[("A2", MAR)]
    assert (a2.due_date, a2.billed_fen, a2.settled_fen, a2.outstanding_fen) == (None, 400, 0, 400)


def test_concentration_gini_top20_and_lorenz_of_a_small_month(spark):
    rows = spark.createDataFrame([(MAR, f"S{i}", v) for i, v in enumerate([0, 100, 100, 200, -50])],
                                 "month date, subscriber_id string, revenue_fen long")
    c = revenue_concentration(rows).collect()[0]
    # x ascending = 0, 0, 100, 100, 200 (negative as 0); top ceil(0.2*5)=1 subscriber: 200/400
    assert c.top20_revenue_share == 0.5 and c.subscribers == 5
    # gini = 2*(3*100 + 4*100 + 5*200)/(5*400) - 6/5 = 3400/2000 - 1.2 = 0.5
    assert c.gini == pytest.approx(0.5)
    lorenz = {r.point: r for r in revenue_lorenz(rows).collect()}
    assert len(lorenz) == 101 and lorenz[0].revenue_share == 0.0 and lorenz[100].revenue_share == 1.0
    assert lorenz[60].population_share == pytest.approx(0.6) and lorenz[60].revenue_share == pytest.approx(0.25)
    assert lorenz[50].population_share == pytest.approx(0.4)  # floor(5 * 50 / 100) = 2


SM = ("month date, subscriber_id string, value_segment string, revenue_fen long, opening boolean, "
      "closing boolean, gross_add boolean, churned_in_month boolean, current_value_index double, "
      "potential_value_index double, clv_fen long, revenue_prior_fen double, churn_score double")


def test_segment_summary_has_all_four_segments_and_shares(spark):
    rows = spark.createDataFrame([
        (MAR, "A", "VALUABLE", 9000, True, True, False, False, 80.0, 70.0, 100000, 6000.0, 0.1),
        (MAR, "B", "VALUABLE", 3000, True, False, False, True, 60.0, 60.0, 0, 3000.0, None),
        (MAR, "C", "LOW_VALUE", 0, False, True, True, False, 10.0, 10.0, 500, None, 0.3),
    ], SM)
    strategies = analytics_settings().strategies
    got = {r.value_segment: r for r in segment_summary(rows, strategies).collect()}
    assert set(got) == {"VALUABLE", "SUB_VALUABLE", "POTENTIAL", "LOW_VALUE"}
    v = got["VALUABLE"]
    assert (v.subscribers, v.revenue_fen, v.revenue_share) == (2, 12000, 1.0)
    assert v.arpu_fen == pytest.approx(12000 / 1.5)  # opening 2, closing 1
    assert v.revenue_growth == pytest.approx(12000 / 9000 - 1)
    assert v.recommended_strategy == strategies["VALUABLE"]
    assert v.avg_churn_score == pytest.approx(0.1)  # the scored subscribers only
    assert got["LOW_VALUE"].avg_churn_score == pytest.approx(0.3) and got["POTENTIAL"].avg_churn_score is None
    assert (got["POTENTIAL"].subscribers, got["POTENTIAL"].arpu_fen) == (0, None)
    assert got["LOW_VALUE"].revenue_growth is None  # no member with history


def test_segment_value_index_means_are_exact_whatever_the_row_order(spark):
    # 32 indices whose exact mean ends in a 5 at the 7th decimal (x.xxxxxx5): rounded half up, in
    # every order and partitioning; a double sum would land either side of the tie
    values = [70.01] * 31 + [70.02]  # mean = 70.0103125 exactly
    rows = [(MAR, f"S{i}", "VALUABLE", 100, True, True, False, False, v, 99.99 - v, 0, None, None)
            for i, v in enumerate(values)]
    seen = set()
    for order, parts in ((rows, 1), (rows[::-1], 3), (rows[5:] + rows[:5], 7)):
        got = {r.value_segment: r for r in segment_summary(
            spark.createDataFrame(order, SM).repartition(parts), analytics_settings().strategies).collect()}
        seen.add((got["VALUABLE"].avg_current_value_index, got["VALUABLE"].avg_potential_value_index))
    assert seen == {(70.010313, 29.979688)}  # 29.9796875 -> ...688 (half up)


def test_segment_migration_from_new_unknown_and_to_churned(spark):
    rows = spark.createDataFrame([
        (MAR, "A", "VALUABLE", 9000, True, True, False, False, 80.0, 70.0, 0, None, None),
        (MAR, "B", "POTENTIAL", 3000, True, False, False, True, 40.0, 60.0, 0, None, None),
        (MAR, "C", "LOW_VALUE", 0, False, True, True, False, 10.0, 10.0, 0, None, None),
        (MAR, "D", "LOW_VALUE", 100, True, True, False, False, 10.0, 10.0, 0, None, None),
    ], SM)
    previous = spark.createDataFrame([(FEB, "A", "POTENTIAL"), (FEB, "B", "POTENTIAL"), (JAN, "D", "VALUABLE")],
                                     "month date, subscriber_id string, value_segment string")
    got = {(r.from_segment, r.to_segment): (r.subscribers, r.revenue_fen)
           for r in segment_migration(rows, previous).collect()}
    assert got == {("POTENTIAL", "VALUABLE"): (1, 9000), ("POTENTIAL", "CHURNED"): (1, 3000),
                   ("NEW", "LOW_VALUE"): (1, 0), ("UNKNOWN", "LOW_VALUE"): (1, 100)}


def test_key_account_health_reads_as_documented(spark):
    # docs/value.md: 2 of 50 lines lost (-20), revenue -10 % over 3 months (-10), 3 complaints (-12) -> 58
    health = analytics_settings().health
    cols = "month date, subscriber_id string, group_id string, revenue_fen long, closing boolean, " \
           "churned_in_month boolean, complaint_count long"
    rows = [(APR, f"L{i}", "G1", 180, i >= 2, i < 2, 1 if i < 3 else 0) for i in range(50)]
    rows.append((APR, "P", None, 1000, True, False, 0))
    now = spark.createDataFrame(rows, cols)
    jan = spark.createDataFrame([(JAN, f"L{i}", "G1", 200, True, False, 0) for i in range(50)], cols)
    history = now.unionByName(jan).select("month", "group_id", "revenue_fen")
    r = key_account_month(now, history, health).collect()[0]
    assert (r.lines, r.active_lines, r.churned_lines, r.complaint_count) == (50, 48, 2, 3)
    assert r.revenue_change_3m == pytest.approx(-0.1) and r.revenue_share == pytest.approx(9000 / 10000)
    assert (r.churn_penalty, r.decline_penalty, r.complaint_penalty) == pytest.approx((20.0, 10.0, 12.0))
    assert r.health_score == 58.0
    assert r.health_reasons == "lost 2 of 50 lines (-20.0); revenue -10.0 % over 3 months (-10.0); 3 complaints (-12.0)"


def _clv_settings(**kw) -> ClvSettings:
    base = dict(annual_discount_rate=0.10, horizon_months=60, fit_window_months=12,
                cohort_groups=["payment_type", "value_segment"], min_churned=5, min_at_risk=100)
    return ClvSettings(**(base | kw))


def test_clv_exposures_take_tenure_and_group_from_the_month_before(spark):
    rows = spark.createDataFrame([
        (FEB, "A", 5, "PREPAID", "VALUABLE", True, False),
        (MAR, "A", 6, "PREPAID", "LOW_VALUE", True, True),
        (MAR, "B", 0, "PREPAID", "LOW_VALUE", False, False),  # gross add: not at risk
    ], "month date, subscriber_id string, tenure_months int, payment_type string, value_segment string, "
       "opening boolean, churned_in_month boolean")
    got = [tuple(r) for r in clv_exposures(rows).collect()]
    assert got == [(MAR, "PREPAID", "VALUABLE", 5, 1, 1)]


def test_a_thin_cohort_group_borrows_the_fit_of_its_payment_type(spark):
    # PREPAID|VALUABLE: 3 churners only; PREPAID pooled: enough at two tenures.
    exposures = [(MAR, "PREPAID", "VALUABLE", 2, 50, 3), (MAR, "PREPAID", "LOW_VALUE", 2, 400, 60),
                 (MAR, "PREPAID", "LOW_VALUE", 20, 400, 20)]
    models = {m[1]: m for m in fit_clv_models(exposures, [MAR], [("PREPAID", "VALUABLE"), ("PREPAID", "LOW_VALUE"),
                                                                   ("POSTPAID", "VALUABLE")], _clv_settings())}
    assert models["PREPAID|LOW_VALUE"][4] == "group"
    assert models["PREPAID|VALUABLE"][4] == "payment_type" and models["PREPAID|VALUABLE"][7] == 850
    assert models["POSTPAID|VALUABLE"][4] == "all"
    assert all(m[5] > 0 and m[6] > 0 for m in models.values())


def test_clv_is_margin_times_derl_and_zero_after_termination(spark):
    derl = spark.createDataFrame([(MAR, "PREPAID|VALUABLE", 12, 10.5)],
                                 "month date, cohort_group string, tenure_months int, derl double")
    rows = spark.createDataFrame([
        (MAR, "A", "PREPAID", "VALUABLE", 12, 2000.0, True),
        (MAR, "B", "PREPAID", "VALUABLE", 12, 2000.0, False),
        (MAR, "C", "POSTPAID", "VALUABLE", 12, 2000.0, True),  # no model for the group
    ], "month date, subscriber_id string, payment_type string, value_segment string, tenure_months int, "
       "margin_3m_fen double, closing boolean")
    got = {r.subscriber_id: r.clv_fen for r in with_clv(rows, derl).collect()}
    assert got == {"A": 21000, "B": 0, "C": None}
    assert not math.isnan(got["A"])
