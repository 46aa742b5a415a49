"""Satisfaction drivers: survey moments in Spark, OLS on the driver, checked against statsmodels."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest
import statsmodels.api as sm
from pyspark.sql import types as T

from crm_pipeline.transforms.marts.satisfaction import (
    ols_from_moments,
    satisfaction_drivers,
    satisfaction_drivers_frame,
    survey_moments,
)

SURVEY = ("survey_date date, response_id string, msisdn string, service_score int, quality_score int, "
          "value_score int, overall_score int, subscriber_id string")
DRIVERS = ("service", "quality", "value")
MOMENT_COLUMNS = [
    "sum_service", "sum_quality", "sum_value", "sum_overall",
    "sum_service_service", "sum_service_quality", "sum_service_value", "sum_service_overall",
    "sum_quality_quality", "sum_quality_value", "sum_quality_overall",
    "sum_value_value", "sum_value_overall", "sum_overall_overall",
]
MAR, APR = date(2026, 3, 1), date(2026, 4, 1)
RTOL = 1e-8


def simulate(seed: int, n: int, weights: tuple[float, float, float], intercept: float = 1.0):
    """Integer 1-10 driver scores sharing a common factor; overall = intercept + weights . scores + noise."""
    rng = np.random.default_rng(seed)
    mood = rng.normal(0.0, 1.2, size=(n, 1))
    scores = np.clip(np.rint(6.5 + mood + rng.normal(0.0, 1.6, size=(n, 3))), 1, 10).astype(int)
    overall = np.clip(np.rint(intercept + scores @ np.array(weights) + rng.normal(0.0, 1.0, n)), 1, 10)
    return scores, overall.astype(int)


def survey_rows(month: date, scores: np.ndarray, overall: np.ndarray, seed: int = 0) -> list[tuple]:
    days = np.random.default_rng(seed).integers(0, 28, size=len(overall))
    return [
        (month + timedelta(days=int(d)), f"R{month:%Y%m}{i:05d}", f"138{i:08d}", *map(int, s), int(y), f"S{i}")
        for i, (d, s, y) in enumerate(zip(days, scores, overall))
    ]


def statsmodels_fit(scores: np.ndarray, overall: np.ndarray):
    return sm.OLS(overall.astype(float), sm.add_constant(scores.astype(float))).fit()


def numpy_moments(period_start: date, period_end: date, scores: np.ndarray, overall: np.ndarray) -> dict:
    """A survey_moments row computed independently, straight from the arrays."""
    z = dict(zip((*DRIVERS, "overall"), np.column_stack([scores, overall]).astype(np.int64).T))
    row = {"period_start": period_start, "period_end": period_end, "n": len(overall)}
    for name in MOMENT_COLUMNS:
        parts = name.removeprefix("sum_").split("_")
        row[name] = int(np.prod([z[p] for p in parts], axis=0).sum())
    return row


def fit_of(rows: list[dict], period_start: date) -> dict[str, dict]:
    return {r["driver"]: r for r in rows if r["period_start"] == period_start}


MARCH = simulate(seed=20260301, n=500, weights=(0.45, 0.35, 0.03))
APRIL = simulate(seed=20260401, n=480, weights=(0.10, 0.25, 0.50), intercept=2.0)


@pytest.fixture(scope="module")
def surveys(spark):
    rows = survey_rows(MAR, *MARCH, seed=1) + survey_rows(APR, *APRIL, seed=2)
    return spark.createDataFrame(rows, SURVEY)


@pytest.fixture(scope="module")
def march_moments(surveys):
    return survey_moments(surveys, months=[MAR]).collect()


@pytest.fixture(scope="module")
def march_fit(march_moments):
    return fit_of(satisfaction_drivers(march_moments, min_respondents=30), MAR)


# --- survey_moments ---------------------------------------------------------------------------

@pytest.mark.spark
def test_moments_are_the_exact_sums_of_the_scores_and_their_products(march_moments):
    (row,) = march_moments
    expected = numpy_moments(MAR, date(2026, 3, 31), *MARCH)
    assert row.asDict() == expected


@pytest.mark.spark
def test_moments_have_one_row_per_calendar_month_from_first_to_last_day(surveys):
    periods = sorted((r.period_start, r.period_end, r.n) for r in survey_moments(surveys).collect())
    assert periods == [(MAR, date(2026, 3, 31), 500), (APR, date(2026, 4, 30), 480)]


@pytest.mark.spark
def test_a_month_filter_keeps_the_months_containing_the_given_dates(surveys):
    rows = survey_moments(surveys, months=[date(2026, 4, 17)]).collect()
    assert [(r.period_start, r.n) for r in rows] == [(APR, 480)]


@pytest.mark.spark
def test_a_response_with_a_null_score_is_left_out_of_the_moments(spark):
    rows = [
        (MAR, "R1", "13800000001", 8, 7, 6, 7, "S1"),
        (MAR, "R2", "13800000002", 5, None, 4, 5, "S2"),
        (MAR, "R3", "13800000003", 9, 9, 8, None, "S3"),
    ]
    (row,) = survey_moments(spark.createDataFrame(rows, SURVEY)).collect()
    assert (row.n, row.sum_service, row.sum_overall_overall) == (1, 8, 49)


# --- the regression, against statsmodels -------------------------------------------------------

@pytest.mark.spark
def test_coefficients_match_statsmodels_ols(march_fit):
    ref = statsmodels_fit(*MARCH)
    got = [march_fit[d]["coefficient"] for d in DRIVERS]
    np.testing.assert_allclose(got, ref.params[1:], rtol=RTOL)


@pytest.mark.spark
def test_standard_errors_and_t_values_match_statsmodels_ols(march_fit):
    ref = statsmodels_fit(*MARCH)
    np.testing.assert_allclose([march_fit[d]["std_error"] for d in DRIVERS], ref.bse[1:], rtol=RTOL)
    np.testing.assert_allclose([march_fit[d]["t_value"] for d in DRIVERS], ref.tvalues[1:], rtol=RTOL)


@pytest.mark.spark
def test_p_values_match_statsmodels_ols(march_fit):
    ref = statsmodels_fit(*MARCH)
    assert ref.pvalues[3] > 0.01, "the weak driver should give a p-value far from 0, so the test has teeth"
    np.testing.assert_allclose([march_fit[d]["p_value"] for d in DRIVERS], ref.pvalues[1:], rtol=RTOL)


@pytest.mark.spark
def test_r_squared_matches_statsmodels_ols_on_every_driver_row(march_fit):
    ref = statsmodels_fit(*MARCH)
    np.testing.assert_allclose([march_fit[d]["r_squared"] for d in DRIVERS], [ref.rsquared] * 3, rtol=RTOL)


@pytest.mark.spark
def test_standardised_coefficients_match_a_regression_on_z_scored_variables(march_fit):
    scores, overall = (a.astype(float) for a in MARCH)
    z_scores = (scores - scores.mean(axis=0)) / scores.std(axis=0, ddof=1)
    z_overall = (overall - overall.mean()) / overall.std(ddof=1)
    ref = sm.OLS(z_overall, sm.add_constant(z_scores)).fit()
    np.testing.assert_allclose([march_fit[d]["std_coefficient"] for d in DRIVERS], ref.params[1:], rtol=RTOL)


def test_the_intercept_matches_statsmodels_ols():
    scores, overall = MARCH
    z = np.column_stack([np.ones(len(overall), dtype=np.int64), scores])
    fit = ols_from_moments(len(overall), z.T @ z, z.T @ overall, int(overall @ overall),
                           ("intercept", *DRIVERS))
    ref = statsmodels_fit(scores, overall)
    np.testing.assert_allclose([fit.coefficients[0], fit.std_errors[0], fit.p_values[0]],
                               [ref.params[0], ref.bse[0], ref.pvalues[0]], rtol=RTOL)


@pytest.mark.spark
def test_two_months_are_regressed_separately(surveys):
    rows = satisfaction_drivers_frame(survey_moments(surveys), min_respondents=30).collect()
    got = [r.asDict() for r in rows]
    for month, data in ((MAR, MARCH), (APR, APRIL)):
        fit, ref = fit_of(got, month), statsmodels_fit(*data)
        np.testing.assert_allclose([fit[d]["coefficient"] for d in DRIVERS], ref.params[1:], rtol=RTOL)
        np.testing.assert_allclose([fit[d]["p_value"] for d in DRIVERS], ref.pvalues[1:], rtol=RTOL)
        np.testing.assert_allclose([fit[d]["r_squared"] for d in DRIVERS], [ref.rsquared] * 3, rtol=RTOL)
        assert {r["respondents"] for r in fit.values()} == {len(data[1])}
    assert {(r["period_start"], r["period_end"]) for r in got} == {(MAR, date(2026, 3, 31)), (APR, date(2026, 4, 30))}


# --- which periods publish ---------------------------------------------------------------------

@pytest.mark.spark
def test_a_period_with_too_few_respondents_produces_no_rows(spark):
    few = simulate(seed=7, n=25, weights=(0.4, 0.3, 0.2))
    rows = survey_rows(MAR, *MARCH) + survey_rows(APR, *few)
    out = satisfaction_drivers_frame(survey_moments(spark.createDataFrame(rows, SURVEY)), min_respondents=30)
    assert sorted((r.period_start, r.driver) for r in out.collect()) == [(MAR, d) for d in sorted(DRIVERS)]


def test_a_period_with_exactly_min_respondents_is_published():
    scores, overall = simulate(seed=7, n=25, weights=(0.4, 0.3, 0.2))
    moments = [numpy_moments(APR, date(2026, 4, 30), scores, overall)]
    assert [r["driver"] for r in satisfaction_drivers(moments, min_respondents=25)] == list(DRIVERS)
    assert satisfaction_drivers(moments, min_respondents=26) == []


def test_a_driver_everyone_scored_the_same_leaves_the_period_unpublished():
    scores, overall = simulate(seed=8, n=200, weights=(0.4, 0.3, 0.2))
    scores[:, 2] = 7
    assert satisfaction_drivers([numpy_moments(MAR, date(2026, 3, 31), scores, overall)], 30) == []


def test_collinear_drivers_leave_the_period_unpublished():
    scores, overall = simulate(seed=9, n=200, weights=(0.4, 0.3, 0.2))
    scores[:, 2] = 11 - scores[:, 0]
    assert satisfaction_drivers([numpy_moments(MAR, date(2026, 3, 31), scores, overall)], 30) == []


def test_no_more_respondents_than_parameters_gives_no_fit():
    scores, overall = np.array([[1, 2, 3], [2, 1, 5], [3, 3, 1], [4, 7, 2]]), np.array([2, 3, 4, 6])
    z = np.column_stack([np.ones(4, dtype=np.int64), scores])
    assert ols_from_moments(4, z.T @ z, z.T @ overall, int(overall @ overall), ("intercept", *DRIVERS)) is None
    z5 = np.vstack([z, [1, 5, 5, 5]])
    y5 = np.r_[overall, 7]
    assert ols_from_moments(5, z5.T @ z5, z5.T @ y5, int(y5 @ y5), ("intercept", *DRIVERS)) is not None


@pytest.mark.spark
def test_no_surveys_give_an_empty_frame_with_the_contract_schema(spark):
    out = satisfaction_drivers_frame(survey_moments(spark.createDataFrame([], SURVEY)), min_respondents=30)
    assert [(f.name, f.dataType) for f in out.schema.fields] == [
        ("period_start", T.DateType()), ("period_end", T.DateType()), ("driver", T.StringType()),
        ("coefficient", T.DoubleType()), ("std_error", T.DoubleType()), ("t_value", T.DoubleType()),
        ("std_coefficient", T.DoubleType()), ("p_value", T.DoubleType()), ("r_squared", T.DoubleType()),
        ("respondents", T.LongType()),
    ]
    assert out.count() == 0
