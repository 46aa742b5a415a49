"""Shifted-beta-geometric retention and CLV (crm_pipeline.models.clv), no Spark.

References: Fader & Hardie, "How to project customer retention" (J. Interactive Marketing 2007),
and "Customer-base valuation in a contractual setting" (Marketing Science 2010).
Expected values come from the papers, from hand arithmetic written next to the assertion, or from
formulas recomputed here independently of the module (scipy.special.betaln, explicit loops).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import betaln

from crm_pipeline.models.clv import (
    SbgFit,
    clv,
    derl,
    fit_sbg,
    fit_sbg_exposures,
    monthly_rate,
    sbg_survival,
)

REGULAR = [1000, 631, 468, 382, 326, 289, 262, 241]
HIGH_END = [1000, 869, 743, 653, 593, 551, 517, 491]


def _survival_by_beta_functions(alpha: float, beta: float, t: int) -> float:
    """S(t) = B(alpha, beta + t) / B(alpha, beta), straight from the definition."""
    return math.exp(betaln(alpha, beta + t) - betaln(alpha, beta))


def _explicit_derl(alpha: float, beta: float, n: int, d: float, periods: int) -> float:
    """sum_{k=1..periods} S(n + k) / S(n) / (1 + d)^k, one term at a time."""
    s_n = _survival_by_beta_functions(alpha, beta, n)
    return sum(_survival_by_beta_functions(alpha, beta, n + k) / s_n / (1 + d) ** k for k in range(1, periods + 1))


def _standard_errors(alpha: float, beta: float, tenure: np.ndarray, at_risk: np.ndarray) -> np.ndarray:
    """Asymptotic standard errors of (alpha, beta) at the true values, given the exposures.

    Each tenure is a binomial(at_risk, h) with h = alpha / (alpha + beta + n), so the Fisher
    information is sum_n at_risk * grad(h) grad(h)^T / (h (1 - h)), with
    dh/dalpha = (beta + n) / (alpha + beta + n)^2 and dh/dbeta = -alpha / (alpha + beta + n)^2.
    """
    total = alpha + beta + tenure
    h = alpha / total
    grad = np.stack([(beta + tenure) / total**2, -alpha / total**2])
    info = (grad * (at_risk / (h * (1 - h)))) @ grad.T
    return np.sqrt(np.diag(np.linalg.inv(info)))


# --- survival -------------------------------------------------------------------------------


def test_survival_is_the_ratio_of_beta_functions():
    got = sbg_survival(0.704, 1.182, 24)
    expected = [_survival_by_beta_functions(0.704, 1.182, t) for t in range(25)]
    assert got == pytest.approx(expected, rel=1e-12)


def test_survival_falls_each_month_by_the_churn_probability_of_that_month():
    # P(T=1) = a / (a + b); P(T=t) = (b + t - 2) / (a + b + t - 1) * P(T=t-1); S(t-1) - S(t) = P(T=t)
    a, b = 0.668, 3.806
    p = [a / (a + b)]
    for t in range(2, 13):
        p.append((b + t - 2) / (a + b + t - 1) * p[-1])
    assert -np.diff(sbg_survival(a, b, 12)) == pytest.approx(p, rel=1e-12)


def test_retention_rate_rises_with_tenure():
    s = sbg_survival(0.9, 3.0, 60)
    retention = s[1:] / s[:-1]
    assert np.all(np.diff(retention) > 0)


# --- fitting ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("survivors", "published_alpha", "published_beta"),
    [pytest.param(REGULAR, 0.704, 1.182, id="regular"), pytest.param(HIGH_END, 0.668, 3.806, id="high-end")],
)
def test_fit_sbg_recovers_fader_hardie_2007_estimates(survivors, published_alpha, published_beta):
    alpha, beta = fit_sbg(survivors)
    # Published to three decimals: the MLE must round to them (half a unit in the last place).
    assert alpha == pytest.approx(published_alpha, abs=5e-4)
    assert beta == pytest.approx(published_beta, abs=5e-4)


def test_fitted_log_likelihood_is_fader_hardies_cohort_likelihood():
    # LL = sum_t churned_t ln P(T = t) + survivors_T ln S(T), computed here from beta functions.
    s = np.array(REGULAR)
    fit = fit_sbg_exposures(np.arange(7), s[:-1], s[:-1] - s[1:])
    surv = [_survival_by_beta_functions(fit.alpha, fit.beta, t) for t in range(8)]
    expected = sum((s[t - 1] - s[t]) * math.log(surv[t - 1] - surv[t]) for t in range(1, 8)) + s[7] * math.log(surv[7])
    assert fit.log_likelihood == pytest.approx(expected, rel=1e-10)
    assert (fit.at_risk, fit.churned, fit.converged) == (int(s[:-1].sum()), 1000 - 241, True)


def test_fit_sbg_recovers_the_parameters_of_a_simulated_cohort():
    alpha, beta, customers, months = 0.9, 3.0, 200_000, 12
    rng = np.random.default_rng(20070101)
    churn_month = rng.geometric(rng.beta(alpha, beta, customers))  # T >= 1: month of churn
    survivors = [int(np.sum(churn_month > t)) for t in range(months + 1)]

    fit_alpha, fit_beta = fit_sbg(survivors)

    se = _standard_errors(alpha, beta, np.arange(months), np.array(survivors[:-1], dtype=float))
    # Four asymptotic standard errors (here about 0.006 for alpha and 0.03 for beta): a correct
    # estimator misses by more with probability ~1e-4; a wrong likelihood misses by far more.
    assert abs(fit_alpha - alpha) < 4 * se[0]
    assert abs(fit_beta - beta) < 4 * se[1]


def _left_truncated_exposures(alpha, beta, customers, window, max_entry_tenure, seed):
    """Subscribers already on the books at tenure e (0..max_entry_tenure) when a `window`-month
    observation starts; only those who survived to e are seen. Returns exposures by true tenure
    and, for contrast, by months since the observation started."""
    rng = np.random.default_rng(seed)
    churn_month = rng.geometric(rng.beta(alpha, beta, customers))
    entry = rng.integers(0, max_entry_tenure + 1, customers)
    seen = churn_month > entry
    churn_month, entry = churn_month[seen], entry[seen]
    size = max_entry_tenure + window
    by_tenure = {"at_risk": np.zeros(size, int), "churned": np.zeros(size, int)}
    by_offset = {"at_risk": np.zeros(size, int), "churned": np.zeros(size, int)}
    for j in range(window):
        n = entry + j
        alive = churn_month > n
        churns = churn_month == n + 1
        by_tenure["at_risk"] += np.bincount(n[alive], minlength=size)
        by_tenure["churned"] += np.bincount(n[churns], minlength=size)
        by_offset["at_risk"][j] += alive.sum()
        by_offset["churned"][j] += churns.sum()
    return by_tenure, by_offset


def test_fit_sbg_exposures_recovers_the_parameters_from_left_truncated_exposures():
    alpha, beta = 0.9, 3.0
    by_tenure, by_offset = _left_truncated_exposures(alpha, beta, 200_000, 12, 24, seed=20100301)
    tenure = np.arange(by_tenure["at_risk"].size)

    fit = fit_sbg_exposures(tenure, by_tenure["at_risk"], by_tenure["churned"])

    se = _standard_errors(alpha, beta, tenure, by_tenure["at_risk"].astype(float))
    assert fit.converged
    assert abs(fit.alpha - alpha) < 4 * se[0]
    assert abs(fit.beta - beta) < 4 * se[1]
    # The same subscribers counted from the window start (truncation ignored) look like a
    # more loyal cohort than they are: the test data really are truncated.
    naive = fit_sbg_exposures(tenure, by_offset["at_risk"], by_offset["churned"])
    assert abs(naive.beta - beta) > 10 * se[1]


def test_fit_sbg_exposures_ignores_row_order_and_adds_up_repeated_tenures():
    s = np.array(REGULAR)
    tenure, at_risk, churned = np.arange(7), s[:-1], s[:-1] - s[1:]
    reference = fit_sbg_exposures(tenure, at_risk, churned)
    order = np.array([5, 2, 6, 0, 3, 1, 4])
    # Split every row into two rows (half the at-risk, half the churners) and shuffle.
    half_r, half_c = at_risk // 2, churned // 2
    split = fit_sbg_exposures(
        np.concatenate([tenure[order], tenure]), np.concatenate([half_r[order], at_risk - half_r]),
        np.concatenate([half_c[order], churned - half_c]),
    )
    assert (split.alpha, split.beta) == pytest.approx((reference.alpha, reference.beta), rel=1e-6)


def test_fit_is_flagged_unconverged_when_churn_does_not_fall_with_tenure():
    # A constant 10 % monthly churn shows no heterogeneity: the MLE is at beta -> infinity.
    fit = fit_sbg_exposures([0, 1, 2], [1000, 900, 810], [100, 90, 81])
    assert not fit.converged


def test_sbg_fit_is_frozen():
    fit = fit_sbg_exposures(range(7), REGULAR[:-1], -np.diff(REGULAR))
    assert isinstance(fit, SbgFit)
    with pytest.raises(AttributeError):
        fit.alpha = 1.0


@pytest.mark.parametrize(
    ("tenure", "at_risk", "churned", "message"),
    [
        pytest.param([0, 1], [100, 80], [0, 0], "no churn event", id="no-churner"),
        pytest.param([0, 1], [100, 80], [100, 80], "no survivor", id="no-survivor"),
        pytest.param([0, 1], [100, -80], [10, 5], r"at_risk\[1\] = -80", id="negative-count"),
        pytest.param([0, 1], [100, 80], [10, 90], "churned=90 > at_risk=80", id="churned-above-at-risk"),
        pytest.param([0, 1, 2], [100, 80], [10, 5], "equal lengths", id="length-mismatch"),
        pytest.param([3, 3], [100, 80], [10, 5], "single tenure", id="single-tenure"),
        pytest.param([0, 1.5], [100, 80], [10, 5], "integers", id="fractional-tenure"),
    ],
)
def test_fit_sbg_exposures_rejects_bad_input_naming_the_rule(tenure, at_risk, churned, message):
    with pytest.raises(ValueError, match=message):
        fit_sbg_exposures(tenure, at_risk, churned)


def test_no_churner_error_says_the_estimate_does_not_exist():
    with pytest.raises(ValueError, match="does not exist"):
        fit_sbg([1000, 1000, 1000])


@pytest.mark.parametrize(
    ("survivors", "message"),
    [
        pytest.param([1000, 631, 700], r"survivors\[2\] = 700 > survivors\[1\] = 631", id="rising"),
        pytest.param([1000, 631, -1], "must be >= 0", id="negative"),
        pytest.param([1000, 631], "at least 3", id="too-short"),
    ],
)
def test_fit_sbg_rejects_bad_survivor_counts(survivors, message):
    with pytest.raises(ValueError, match=message):
        fit_sbg(survivors)


# --- discounted expected residual lifetime and CLV -------------------------------------------


def test_derl_with_a_two_month_horizon_by_hand():
    # alpha=1, beta=3, tenure 0, d=10 %: S(1)/S(0) = 3/4 = 0.75, S(2)/S(0) = 3/4 * 4/5 = 0.6,
    # DERL = 0.75 / 1.1 + 0.6 / 1.21 = 0.681818... + 0.495867... = 1.177685...
    assert derl(1.0, 3.0, 0, 0.1, horizon=2) == pytest.approx(0.75 / 1.1 + 0.6 / 1.21, rel=1e-12)


def test_derl_infinite_horizon_by_hand_for_uniform_churn_probability():
    # alpha=beta=1 (theta uniform): S(t) = B(1, 1+t) / B(1, 1) = 1 / (t + 1). With x = 1/(1+d),
    # DERL = sum_{k>=1} x^k / (k+1) = (1/x) (-ln(1-x) - x) = -ln(1-x)/x - 1.
    # d = 0.1: x = 1/1.1, 1 - x = 1/11, so DERL = 1.1 ln 11 - 1.
    assert derl(1.0, 1.0, 0, 0.1) == pytest.approx(1.1 * math.log(11) - 1, rel=1e-12)


def test_undiscounted_derl_is_the_expected_remaining_months_by_hand():
    # d = 0: DERL(n=0) = sum_{k>=1} S(k) = E[T] - 1, and E[T] = E[1/theta] = (a+b-1)/(a-1).
    # alpha=2, beta=3: E[T] = 4/1 = 4, so DERL = 3.
    assert derl(2.0, 3.0, 0, 0.0) == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize(
    ("alpha", "beta", "tenure", "d"),
    [(0.704, 1.182, 0, 0.1), (0.668, 3.806, 7, 0.05), (2.5, 0.3, 30, 0.2), (0.2, 8.0, 3, 0.15)],
)
def test_derl_closed_form_equals_the_long_explicit_sum(alpha, beta, tenure, d):
    # Terms are below (1+d)^-k, so 400 terms at d >= 5 % leave a tail under 1e-8.
    assert derl(alpha, beta, tenure, d) == pytest.approx(_explicit_derl(alpha, beta, tenure, d, 400), rel=1e-8)


@pytest.mark.parametrize("horizon", [0, 1, 5, 36])
def test_derl_with_a_horizon_equals_the_explicit_finite_sum(horizon):
    assert derl(0.668, 3.806, 4, 0.01, horizon=horizon) == pytest.approx(
        _explicit_derl(0.668, 3.806, 4, 0.01, horizon), rel=1e-12, abs=0.0
    )


def test_derl_with_a_horizon_converges_to_the_closed_form_as_the_horizon_grows():
    d = monthly_rate(0.10)
    closed = derl(0.704, 1.182, 6, d)
    gaps = [closed - derl(0.704, 1.182, 6, d, horizon=h) for h in (12, 60, 240, 1200, 6000)]
    assert all(g > 0 for g in gaps[:-1])
    assert np.all(np.diff(gaps) < 0)
    assert abs(gaps[-1]) < 1e-9 * closed


def test_fader_hardie_2010_derl_is_this_derl_times_one_plus_d():
    # FH 2010 count the upcoming renewal undiscounted: for a subscriber with n completed months,
    # DERL_FH = (b+n)/(a+b+n) * 2F1(1, b+n+1; a+b+n+1; 1/(1+d)) = (1 + d) * derl.
    from scipy.special import hyp2f1

    a, b, d = 0.704, 1.182, 0.1
    for n in (0, 4, 20):
        fh = (b + n) / (a + b + n) * hyp2f1(1, b + n + 1, a + b + n + 1, 1 / (1 + d))
        assert (1 + d) * derl(a, b, n, d) == pytest.approx(fh, rel=1e-12)


@pytest.mark.parametrize("horizon", [None, 24])
def test_derl_of_a_tenure_array_has_its_shape_and_elementwise_values(horizon):
    tenure = np.array([[0, 1, 2], [12, 24, 120]])
    got = derl(0.9, 3.0, tenure, 0.01, horizon)
    assert got.shape == (2, 3)
    one_by_one = np.array([[derl(0.9, 3.0, int(n), 0.01, horizon) for n in row] for row in tenure])
    np.testing.assert_allclose(got, one_by_one, rtol=1e-14)
    assert isinstance(derl(0.9, 3.0, 5, 0.01, horizon), float)


@pytest.mark.parametrize("horizon", [None, 36])
def test_derl_rises_with_tenure(horizon):
    values = derl(0.9, 3.0, np.arange(0, 121), 0.01, horizon)
    assert np.all(np.diff(values) > 0)


@pytest.mark.parametrize("horizon", [None, 36])
def test_derl_falls_as_the_discount_rate_rises(horizon):
    values = [derl(0.9, 3.0, 6, d, horizon) for d in (0.0 if horizon else 0.001, 0.005, 0.01, 0.05, 0.2)]
    assert np.all(np.diff(values) < 0)


def test_clv_is_margin_times_derl_by_hand():
    # 50 per month for the two-month hand example above: 50 * (0.75 / 1.1 + 0.6 / 1.21).
    assert clv(50.0, 1.0, 3.0, 0, 0.1, horizon=2) == pytest.approx(50 * (0.75 / 1.1 + 0.6 / 1.21), rel=1e-12)
    margins, tenures = np.array([10.0, 20.0, 30.0]), np.array([0, 6, 12])
    assert clv(margins, 0.9, 3.0, tenures, 0.01) == pytest.approx(margins * derl(0.9, 3.0, tenures, 0.01), rel=1e-14)


def test_monthly_rate_compounds_to_the_annual_rate():
    assert (1 + monthly_rate(0.10)) ** 12 == pytest.approx(1.10, rel=1e-14)
    assert monthly_rate(0.0) == 0.0


def test_undiscounted_infinite_derl_is_refused_when_expected_lifetime_is_infinite():
    # alpha <= 1: E[1/theta] diverges, so the undiscounted lifetime is infinite.
    with pytest.raises(ValueError, match="infinite"):
        derl(0.704, 1.182, 0, 0.0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param((0.0, 1.0, 0, 0.1), "alpha > 0", id="zero-alpha"),
        pytest.param((1.0, 1.0, -1, 0.1), "tenure", id="negative-tenure"),
        pytest.param((1.0, 1.0, 0, -0.1), "discount_rate", id="negative-discount"),
        pytest.param((1.0, 1.0, 0, 0.1, -3), "horizon", id="negative-horizon"),
    ],
)
def test_derl_rejects_bad_input_naming_the_argument(args, message):
    with pytest.raises(ValueError, match=message):
        derl(*args)
