"""Value indices on hand-made frames: each moves the right way with each driver, segments follow
the configured thresholds, and a subscriber's indices ignore everybody else's data."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import pytest

from crm_pipeline.pipeline.settings import analytics_settings
from crm_pipeline.transforms.marts.value import (
    log_score,
    with_component_scores,
    with_value_components,
    with_value_segments,
)

pytestmark = pytest.mark.spark

M = date(2026, 3, 1)
INPUTS = {
    "month": ("date", M), "subscriber_id": ("string", "S1"), "account_id": ("string", "A1"),
    "plan_id": ("string", "P1"), "payment_type": ("string", "POSTPAID"), "network_gen": ("string", "4G"),
    "birth_year": ("int", 1990), "tenure_months": ("int", 24), "revenue_fen": ("long", 8000),
    "arpu_3m_fen": ("double", 8000.0), "margin_3m_fen": ("double", 5000.0), "revenue_prior_fen": ("double", 8000.0),
    "data_mb": ("double", 3000.0), "data_mb_prior": ("double", 3000.0), "rows_3m": ("long", 3),
    "recharge_months_3m": ("long", 0), "bills_due": ("int", 3), "on_time_share": ("double", 1.0),
    "arrears_fen": ("long", 0), "included_data_mb": ("long", 10240), "voice_contacts": ("long", 10),
    "on_net_contacts": ("long", 5),
}
SCHEMA = ", ".join(f"{k} {t}" for k, (t, _) in INPUTS.items())


@pytest.fixture(scope="module")
def settings():
    return analytics_settings().value


def scored(spark, settings, *changes: dict):
    """One subscriber per dict of changes from the defaults; returns {subscriber_id: Row}."""
    rows = []
    for i, change in enumerate(changes):
        values = {k: v for k, (_, v) in INPUTS.items()} | {"subscriber_id": f"S{i}"} | change
        rows.append(tuple(values[k] for k in INPUTS))
    df = with_value_segments(with_component_scores(spark.createDataFrame(rows, SCHEMA), settings), settings)
    return {r.subscriber_id: r for r in df.collect()}


# (driver, low value, high value, index that must rise with it)
RISING = [
    ("arpu_3m_fen", 3000.0, 20000.0, "current_value_index"),
    ("margin_3m_fen", 1000.0, 15000.0, "current_value_index"),
    ("on_time_share", 0.34, 1.0, "current_value_index"),
    ("revenue_fen", 6000, 12000, "potential_value_index"),
    ("data_mb", 1000.0, 6000.0, "potential_value_index"),
    ("tenure_months", 3, 48, "potential_value_index"),
    ("network_gen", "3G", "5G", "potential_value_index"),
    ("calling_circle", {"voice_contacts": 3, "on_net_contacts": 1}, {"voice_contacts": 42, "on_net_contacts": 14},
     "potential_value_index"),
    ("on_net_contacts", 1, 9, "potential_value_index"),
]


@pytest.mark.parametrize("driver, low, high, index", RISING, ids=[r[0] for r in RISING])
def test_index_rises_with_its_driver(spark, settings, driver, low, high, index):
    low, high = (low, high) if isinstance(low, dict) else ({driver: low}, {driver: high})
    got = scored(spark, settings, low, high)
    assert got["S1"][index] > got["S0"][index]


def test_arrears_lower_the_current_value(spark, settings):
    got = scored(spark, settings, {"arrears_fen": 0}, {"arrears_fen": 8000})
    assert got["S1"].current_value_index < got["S0"].current_value_index
    assert got["S1"].cv_payment == pytest.approx(100 - 50 * 0.8)


def test_prepaid_payment_is_recharge_regularity(spark, settings):
    got = scored(spark, settings, {"payment_type": "PREPAID", "recharge_months_3m": 1, "rows_3m": 3},
                 {"payment_type": "PREPAID", "recharge_months_3m": 3, "rows_3m": 3})
    assert got["S0"].cv_payment == pytest.approx(100 / 3) and got["S1"].cv_payment == 100.0


def test_a_new_postpaid_line_without_a_bill_due_gets_the_neutral_payment_score(spark, settings):
    got = scored(spark, settings, {"bills_due": None, "on_time_share": None, "arrears_fen": None})
    assert got["S0"].cv_payment == settings.payment["neutral"]


def test_life_stage_peaks_for_young_adults(spark, settings):
    got = scored(spark, settings, {"birth_year": 1996}, {"birth_year": 1956}, {"birth_year": None})
    assert got["S0"].pv_life_stage == 100.0 and got["S1"].pv_life_stage == 20.0
    assert got["S2"].pv_life_stage == settings.life_stage["neutral"]


def test_data_adoption_is_use_against_the_plan_allowance(spark, settings):
    got = scored(spark, settings, {"data_mb": 5120.0, "included_data_mb": 10240},
                 {"data_mb": 5120.0, "included_data_mb": 0})
    assert got["S0"].pv_data_adoption == pytest.approx(50.0)
    assert got["S1"].pv_data_adoption == pytest.approx(100 * 5120 / settings.data_adoption["reference_mb_without_allowance"])


def test_growth_without_history_is_neutral_and_doubling_scores_full(spark, settings):
    got = scored(spark, settings, {"revenue_prior_fen": None},
                 {"revenue_fen": 2 * 8000 + 1000, "revenue_prior_fen": 8000.0})
    assert got["S0"].pv_revenue_growth == 50.0
    assert got["S1"].pv_revenue_growth == pytest.approx(100.0)  # (17000+1000)/(8000+1000) = 2


def test_log_score_reference_points(spark):
    df = spark.createDataFrame([(0.0,), (5000.0,), (30000.0,), (90000.0,), (-10.0,)], "x double")
    got = [r.s for r in df.select(log_score(df.x, 5000, 30000).alias("s")).collect()]
    assert got[0] == 0.0 and got[2] == pytest.approx(100.0) and got[3] == 100.0 and got[4] == 0.0
    assert got[1] == pytest.approx(100 * math.log(2) / math.log(7))


def test_index_is_the_weighted_mean_of_its_components(spark, settings):
    r = scored(spark, settings, {})["S0"]
    w = settings.current_value_weights
    want = sum(w[c] * r[f"cv_{c}"] for c in w) / sum(w.values())
    assert r.current_value_index == pytest.approx(round(want, 2))


def test_segments_split_on_the_configured_thresholds(spark, settings):
    rich = {"arpu_3m_fen": 30000.0, "margin_3m_fen": 20000.0}
    poor = {"arpu_3m_fen": 500.0, "margin_3m_fen": 0.0, "on_time_share": 0.0}
    growing = {"revenue_fen": 30000, "data_mb": 20000.0, "data_mb_prior": 1000.0, "network_gen": "5G",
               "voice_contacts": 60, "on_net_contacts": 60, "tenure_months": 60}
    flat = {"revenue_fen": 0, "data_mb": 0.0, "network_gen": "2G", "voice_contacts": 0, "tenure_months": 0,
            "birth_year": 1940}
    got = scored(spark, settings, rich | growing, rich | flat, poor | growing, poor | flat)
    assert [got[f"S{i}"].value_segment for i in range(4)] == ["VALUABLE", "SUB_VALUABLE", "POTENTIAL", "LOW_VALUE"]
    # moving "high" above the valuable subscriber's indices turns it low/low
    strict = replace(settings, high_current_from=got["S0"].current_value_index + 0.01,
                     high_potential_from=got["S0"].potential_value_index + 0.01)
    again = scored(spark, strict, rich | growing)
    assert again["S0"].value_segment == "LOW_VALUE"
    at = replace(settings, high_current_from=got["S0"].current_value_index,
                 high_potential_from=got["S0"].potential_value_index)
    assert scored(spark, at, rich | growing)["S0"].value_segment == "VALUABLE"  # "from" is inclusive


def test_a_subscribers_indices_ignore_other_subscribers_data(spark, settings):
    base = ("month date, subscriber_id string, account_id string, plan_id string, payment_type string, "
            "network_gen string, birth_year int, tenure_months int, revenue_fen long, arpu_3m_fen double, "
            "margin_3m_fen double, revenue_prior_fen double, data_mb double, data_mb_prior double, rows_3m long, "
            "recharge_months_3m long")
    payment_schema = "account_id string, month date, bills_due int, on_time_share double, arrears_fen long"
    contact_schema = "subscriber_id string, month date, voice_contacts long, on_net_contacts long"
    plan_schema = "plan_id string, month date, included_data_mb long"

    def run(other: tuple):
        a = (M, "A", "AC1", "P1", "POSTPAID", "4G", 1990, 24, 8000, 8000.0, 5000.0, 7000.0, 3000.0, 2000.0, 3, 0)
        rows = spark.createDataFrame([a, other[0]], base)
        payment = spark.createDataFrame([("AC1", M, 3, 1.0, 0), other[1]], payment_schema)
        contacts = spark.createDataFrame([("A", M, 12, 4), other[2]], contact_schema)
        plans = spark.createDataFrame([("P1", M, 10240), other[3]], plan_schema)
        out = with_value_segments(with_value_components(rows, payment, contacts, plans, settings), settings)
        return out.where("subscriber_id = 'A'").collect()[0]

    small = ((M, "B", "AC2", "P2", "PREPAID", "3G", 1960, 2, 100, 100.0, 10.0, 90.0, 5.0, 1.0, 1, 0),
             ("AC2", M, 1, 0.0, 9000), ("B", M, 1, 0), ("P2", M, 100))
    huge = ((M, "B", "AC2", "P2", "POSTPAID", "5G", 2000, 90, 900000, 900000.0, 800000.0, 10.0, 90000.0, 1.0, 3, 3),
            ("AC2", M, 3, 1.0, 0), ("B", M, 300, 300), ("P2", M, 100000))
    assert run(small).asDict() == run(huge).asDict()
