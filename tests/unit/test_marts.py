"""Gold marts on tiny frames: month edges, ARPU, KPIs adding up, value segments."""

from __future__ import annotations

from datetime import date

import pytest
from pyspark.sql import functions as F

from crm_pipeline.transforms.marts.kpi_month import kpi_month
from tests.unit.plans import below, plan_lines
from crm_pipeline.transforms.marts.subscriber_month import (
    month_frame,
    monthly_revenue,
    subscriber_month_base,
    with_trailing_windows,
)

pytestmark = pytest.mark.spark

FEB28, MAR1, MAR15, MAR31 = date(2026, 2, 28), date(2026, 3, 1), date(2026, 3, 15), date(2026, 3, 31)
M = MAR1
SNAP = ("snapshot_date date, subscriber_id string, status string, status_date date, activation_date date, "
        "msisdn string, customer_id string, account_id string, group_id string, city_code string, brand string, "
        "plan_id string, payment_type string, network_gen string, birth_year int, terminate_reason string")


def snap(day, sid, status="ACTIVE", status_date=date(2025, 1, 15), activated=date(2025, 1, 15), city="025"):
    return (day, sid, status, status_date, activated, "138" + sid.rjust(8, "0"), "C" + sid, "A" + sid, None, city,
            "GOTONE", "P1", "POSTPAID", "4G", 1990, "VOLUNTARY" if status == "TERMINATED" else None)


@pytest.fixture(scope="module")
def base(spark):
    rows = []
    for day in (FEB28, MAR1, MAR15, MAR31):
        rows.append(snap(day, "A"))
        rows.append(snap(day, "B") if day == FEB28 else snap(day, "B", "TERMINATED", MAR1))
        rows.append(snap(day, "D") if day != MAR31 else snap(day, "D", "SUSPENDED", MAR31))
        rows.append(snap(day, "E", "TERMINATED", date(2026, 2, 10)))
        rows.append(snap(day, "F", city="0512" if day == MAR31 else "025"))
    rows.append(snap(MAR31, "C", activated=MAR31, status_date=MAR31))
    snaps = spark.createDataFrame(rows, SNAP)
    months = month_frame(spark, [M], {FEB28, MAR1, MAR15, MAR31})
    return {r.subscriber_id: r for r in subscriber_month_base(snaps, months).collect()}


def test_a_line_terminated_on_the_first_has_a_churned_row_with_last_active_attributes(base):
    b = base["B"]
    assert (b.opening, b.closing, b.churned_in_month, b.status_at_month_end) == (True, False, True, "TERMINATED")
    assert b.msisdn == "138" + "B".rjust(8, "0")


def test_an_activation_on_the_last_day_is_a_gross_add_with_zero_tenure(base):
    c = base["C"]
    assert (c.opening, c.gross_add, c.closing, c.tenure_months) == (False, True, True, 0)


def test_a_suspended_line_still_counts_as_active_at_month_end(base):
    d = base["D"]
    assert (d.closing, d.churned_in_month, d.status_at_month_end) == (True, False, "SUSPENDED")


def test_a_line_terminated_before_the_month_has_no_row(base):
    assert "E" not in base


def test_month_end_attributes_win_over_earlier_ones(base):
    assert base["F"].city_code == "0512"


def test_tenure_counts_whole_months_to_month_end(base):
    assert base["A"].tenure_months == 14  # 2025-01-15 -> 2026-03-31


def test_opening_plus_adds_minus_churn_equals_closing(base):
    rows = base.values()
    opening, adds = sum(r.opening for r in rows), sum(r.gross_add for r in rows)
    churned, closing = sum(r.churned_in_month for r in rows), sum(r.closing for r in rows)
    assert (opening, adds, churned, closing) == (4, 1, 1, 4)
    assert opening + adds - churned == closing


def test_first_month_of_data_opens_on_its_first_day_without_counting_its_adds(spark):
    snaps = spark.createDataFrame([snap(MAR1, "A"), snap(MAR1, "G", activated=MAR1, status_date=MAR1),
                                   snap(MAR31, "A"), snap(MAR31, "G", activated=MAR1, status_date=MAR1)], SNAP)
    rows = {r.subscriber_id: r for r in subscriber_month_base(snaps, month_frame(spark, [M], {MAR1, MAR31})).collect()}
    assert (rows["A"].opening, rows["A"].gross_add) == (True, False)
    assert (rows["G"].opening, rows["G"].gross_add) == (False, True)


def test_a_line_added_and_terminated_between_snapshots_keeps_the_attributes_of_its_latest_one(spark):
    """No snapshot shows it active: its row takes the attributes of the month's latest snapshot,
    and a terminated line's opening-day row of the month before gives none."""
    mar10, mar12 = date(2026, 3, 10), date(2026, 3, 12)
    rows = [snap(MAR15, "H", "TERMINATED", mar12, activated=mar10, city="0512"),
            snap(MAR31, "H", "TERMINATED", mar12, activated=mar10, city="0513"),
            snap(FEB28, "J", "TERMINATED", date(2026, 2, 1)), snap(MAR1, "J", "ACTIVE", MAR1, activated=MAR1),
            snap(MAR31, "J", "ACTIVE", MAR1, activated=MAR1, city="0514")]
    months = month_frame(spark, [M], {FEB28, MAR1, MAR15, MAR31})
    got = {r.subscriber_id: r for r in subscriber_month_base(spark.createDataFrame(rows, SNAP), months).collect()}
    h = got["H"]
    assert (h.opening, h.gross_add, h.closing, h.churned_in_month, h.status_at_month_end) == (
        False, True, False, True, "TERMINATED")
    assert (h.city_code, h.terminate_reason, h.activation_date) == ("0513", "VOLUNTARY", mar10)
    j = got["J"]  # terminated on the opening day, active from the 1st: the month's rows give the attributes
    assert (j.opening, j.gross_add, j.closing, j.city_code, j.activation_date) == (False, True, True, "0514", MAR1)


def test_revenue_sums_bill_lines_including_negative_discounts(spark):
    bills = spark.createDataFrame(
        [("S1", M, 5800), ("S1", M, -800), ("S1", date(2026, 2, 1), 100)],
        "subscriber_id string, bill_month date, amount_fen long",
    )
    got = sorted((r.month, r.revenue_fen) for r in monthly_revenue(bills).collect())
    assert got == [(date(2026, 2, 1), 100), (M, 5000)]


def test_trailing_windows_average_only_months_with_a_row(spark):
    cols = "subscriber_id string, month date, revenue_fen long, margin_fen double, data_mb double, recharge_count long"
    rows = spark.createDataFrame([("S1", M, 3000, 2000.0, 500.0, 0)], cols)
    history = spark.createDataFrame([
        ("S1", date(2026, 1, 1), 1000, 400.0, 100.0, 2),
        ("S1", date(2025, 12, 1), 99999, 9.0, 300.0, 1),
        ("S1", date(2025, 11, 1), 77777, 7.0, 700.0, 1),  # before M-3: no window reaches it
        ("S1", M, 1, 1.0, 1.0, 1),  # superseded by this run's March row
    ], cols)
    windowed = with_trailing_windows(rows, history)
    got = windowed.collect()[0]
    assert got.arpu_3m_fen == 2000.0  # Mar (this run's 3000) and Jan; Feb inactive; Dec out of range
    assert got.margin_3m_fen == 1200.0
    assert got.revenue_prior_fen == pytest.approx((1000 + 99999) / 2)  # Dec..Feb rows: Dec and Jan
    assert got.data_mb_prior == pytest.approx(200.0) and got.data_mb_3m == pytest.approx(300.0)
    assert (got.rows_3m, got.recharge_months_3m) == (2, 1)
    # and it is not read: the earlier months reach the windows through a semi join on M-3..M
    assert below(windowed, "Window [", "Join LeftSemi"), "\n".join(plan_lines(windowed))


SM = ("month date, subscriber_id string, city_code string, brand string, payment_type string, plan_id string, "
      "value_segment string, network_gen string, opening boolean, closing boolean, gross_add boolean, "
      "churned_in_month boolean, revenue_fen long, voice_sec long, data_bytes long")


def test_kpi_arpu_divides_revenue_by_average_of_opening_and_closing(spark):
    rows = spark.createDataFrame([
        (M, "A", "025", "GOTONE", "POSTPAID", "P1", "VALUABLE", "5G", True, True, False, False, 10000, 600, 1048576),
        (M, "B", "025", "GOTONE", "POSTPAID", "P1", "LOW_VALUE", "4G", True, False, False, True, 2000, 0, 0),
        (M, "C", "0512", "MZONE", "PREPAID", "P2", "LOW_VALUE", "4G", False, True, True, False, 1000, 60, 0),
    ], SM)
    k = {(r.dimension, r.dimension_value): r for r in kpi_month(rows).collect()}
    all_ = k[("ALL", "ALL")]
    assert (all_.opening_subscribers, all_.closing_subscribers, all_.gross_adds, all_.churned_subscribers) == (2, 2, 1, 1)
    assert all_.arpu_fen == pytest.approx(13000 / 2) and all_.churn_rate == pytest.approx(0.5)
    assert all_.voice_mou_per_sub == pytest.approx(11 / 3) and all_.data_mb_per_sub == pytest.approx(1 / 3)
    assert k[("city_code", "025")].arpu_fen == pytest.approx(12000 / 1.5)
    assert k[("city_code", "0512")].churn_rate is None  # no opening subscribers


def test_every_dimension_adds_up_to_all(spark):
    rows = spark.createDataFrame([
        (M, str(i), ["025", "0512"][i % 2], ["GOTONE", "MZONE", "EASYOWN"][i % 3], "PREPAID", f"P{i % 4}",
         "LOW_VALUE", ["4G", "5G"][i % 2], i % 5 != 0, i % 7 != 0, i % 5 == 0, i % 7 == 0, 100 * i, i, i)
        for i in range(40)
    ], SM)
    k = kpi_month(rows)
    totals = k.groupBy("dimension").agg(F.sum("revenue_fen").alias("r"), F.sum("active_subscribers").alias("n"),
                                        F.sum("churned_subscribers").alias("c")).collect()
    assert {(t.r, t.n, t.c) for t in totals} == {(sum(100 * i for i in range(40)), 40, 6)}
