"""Shifted-beta-geometric (sBG) retention and customer lifetime value, one period = one month.

Fader & Hardie, "How to project customer retention" (J. Interactive Marketing, 2007) and
"Customer-base valuation in a contractual setting: the perils of ignoring heterogeneity"
(Marketing Science, 2010). Each subscriber churns at the end of any period with a fixed
probability theta, and theta ~ Beta(alpha, beta) across subscribers. Writing T for the period in
which a subscriber churns (T = 1, 2, ...):

    P(T = 1) = alpha / (alpha + beta)
    P(T = t) = (beta + t - 2) / (alpha + beta + t - 1) * P(T = t - 1)
    S(t) = P(T > t) = B(alpha, beta + t) / B(alpha, beta),  S(0) = 1
    h(n) = P(T = n + 1 | T > n) = alpha / (alpha + beta + n)

where ``n`` (the tenure) counts completed periods. Because h(n) falls with n, the retention rate of
a cohort rises with tenure even though no individual's churn probability changes: the churn-prone
leave first.

Pure functions over numpy arrays; no Spark, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import hyp2f1

LOG_PARAM_BOUNDS = (-10.0, 10.0)
"""Bounds on ln(alpha) and ln(beta) during the fit: alpha and beta in [4.5e-5, 2.2e4]."""

HOMOGENEOUS_LL_GAIN = 1e-6
"""Log-likelihood gain (nats) over the one-rate geometric model below which a fit is flagged:
the sBG tends to the geometric as beta -> infinity with alpha / (alpha + beta) fixed, so a fit no
better than the geometric sits on a ridge where only that ratio is determined."""


@dataclass(frozen=True)
class SbgFit:
    """Maximum-likelihood sBG fit.

    alpha, beta: the Beta(alpha, beta) mixing distribution of the per-period churn probability
    (dimensionless). log_likelihood: natural log of the likelihood at (alpha, beta), in nats
    (the binomial coefficients are omitted, as in Fader & Hardie). at_risk, churned: total
    subscriber-periods at risk and total churn events over all exposures used. converged: the
    optimiser reported success, neither parameter sits on its bound, and the fit beats the
    homogeneous geometric model by more than HOMOGENEOUS_LL_GAIN; False means the data point to a
    boundary (typically beta -> infinity when observed churn does not fall with
    tenure, i.e. no detectable heterogeneity), so alpha and beta should not be used as is.
    """

    alpha: float
    beta: float
    log_likelihood: float
    at_risk: int
    churned: int
    converged: bool


def _check_params(alpha: float, beta: float) -> None:
    if not (np.isfinite(alpha) and alpha > 0 and np.isfinite(beta) and beta > 0):
        raise ValueError(f"sBG needs finite alpha > 0 and beta > 0, got alpha={alpha!r}, beta={beta!r}")


def _as_int_array(values: ArrayLike, name: str) -> NDArray[np.int64]:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
            raise ValueError(f"{name} must hold integers, got {arr[:5]!r}...")
    arr = arr.astype(np.int64)
    if np.any(arr < 0):
        i = int(np.argmax(arr < 0))
        raise ValueError(f"{name} must be >= 0, got {name}[{i}] = {arr[i]}")
    return arr


def sbg_survival(alpha: float, beta: float, periods: int) -> NDArray[np.float64]:
    """S(0), S(1), ..., S(periods): share of a new cohort still subscribed after t months.

    Computed as S(t) = prod_{k<t} (beta + k) / (alpha + beta + k), which equals
    B(alpha, beta + t) / B(alpha, beta). Returns an array of length periods + 1, dimensionless.
    """
    _check_params(alpha, beta)
    if int(periods) != periods or periods < 0:
        raise ValueError(f"periods must be an integer >= 0, got {periods!r}")
    k = np.arange(int(periods), dtype=np.float64)
    return np.concatenate(([1.0], np.cumprod((beta + k) / (alpha + beta + k))))


def _neg_ll_and_grad(
    log_params: NDArray[np.float64], tenure: NDArray[np.float64], at_risk: NDArray[np.float64],
    churned: NDArray[np.float64], scale: float,
) -> tuple[float, NDArray[np.float64]]:
    """Negative log-likelihood / scale and its gradient in (ln alpha, ln beta).

    ln h(n) = ln a - ln(a+b+n) and ln(1 - h(n)) = ln(b+n) - ln(a+b+n), so
    LL = C ln a + sum (r-c) ln(b+n) - sum r ln(a+b+n).
    """
    a, b = np.exp(log_params)
    total = a + b + tenure
    survived = at_risk - churned
    ll = churned.sum() * np.log(a) + np.sum(survived * np.log(b + tenure)) - np.sum(at_risk * np.log(total))
    d_log_a = churned.sum() - a * np.sum(at_risk / total)
    d_log_b = b * (np.sum(survived / (b + tenure)) - np.sum(at_risk / total))
    return -ll / scale, -np.array([d_log_a, d_log_b]) / scale


def fit_sbg_exposures(tenure: ArrayLike, at_risk: ArrayLike, churned: ArrayLike) -> SbgFit:
    """Maximum-likelihood sBG fit from exposures aggregated by tenure.

    Row i says: at_risk[i] subscribers were alive having completed tenure[i] months, and churned[i]
    of them churned during the following month. Each subscriber-month enters through the hazard
    h(n) given survival to n, so subscribers first observed at a tenure > 0 (left truncation) and
    subscribers still alive when observation ends (right censoring) are both handled exactly.
    Rows need not be sorted or contiguous; repeated tenures add up.

    Log-likelihood: sum_i churned[i] ln h(tenure[i]) + (at_risk[i] - churned[i]) ln(1 - h(tenure[i])),
    maximised over (ln alpha, ln beta) in LOG_PARAM_BOUNDS with L-BFGS-B and the analytic gradient,
    from a few starting points that match the pooled churn rate at different heterogeneity levels.

    Raises ValueError on unequal lengths, negative or non-integer values, churned > at_risk, no
    churn event or no surviving subscriber-month (the MLE does not exist then), or exposure at a
    single tenure only (then only alpha / (alpha + beta + n) is identified, not alpha and beta).
    """
    n = _as_int_array(tenure, "tenure")
    r = _as_int_array(at_risk, "at_risk")
    c = _as_int_array(churned, "churned")
    if not (n.size == r.size == c.size):
        raise ValueError(f"tenure, at_risk and churned must have equal lengths, got {n.size}, {r.size}, {c.size}")
    if np.any(c > r):
        i = int(np.argmax(c > r))
        raise ValueError(f"churned cannot exceed at_risk: row {i} (tenure {n[i]}) has churned={c[i]} > at_risk={r[i]}")
    total_r, total_c = int(r.sum()), int(c.sum())
    if total_c == 0:
        raise ValueError("no churn event in the exposures: the sBG maximum-likelihood estimate does not exist "
                         "(the likelihood rises without bound as alpha -> 0)")
    if total_c == total_r:
        raise ValueError("every subscriber at risk churned (no survivor): the sBG maximum-likelihood estimate "
                         "does not exist (the likelihood rises without bound as beta -> 0)")
    if np.unique(n[r > 0]).size < 2:
        raise ValueError("exposures cover a single tenure: alpha and beta are not separately identified; "
                         "need subscribers at risk at two or more tenures")

    args = (n.astype(np.float64), r.astype(np.float64), c.astype(np.float64), float(total_r))
    pooled = total_c / total_r
    lo, hi = LOG_PARAM_BOUNDS
    best = None
    for alpha0 in (0.1, 1.0, 10.0):
        start = np.clip(np.log([alpha0, alpha0 * (1.0 - pooled) / pooled]), lo + 1.0, hi - 1.0)
        res = minimize(_neg_ll_and_grad, start, args=args, jac=True, method="L-BFGS-B",
                       bounds=[LOG_PARAM_BOUNDS] * 2, options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
        if best is None or res.fun < best.fun:
            best = res
    log_a, log_b = best.x
    log_likelihood = float(-best.fun * total_r)
    on_bound = any(min(v - lo, hi - v) < 1e-6 for v in (log_a, log_b))
    geometric_ll = total_c * np.log(pooled) + (total_r - total_c) * np.log1p(-pooled)
    beats_geometric = log_likelihood - geometric_ll > HOMOGENEOUS_LL_GAIN
    return SbgFit(
        alpha=float(np.exp(log_a)), beta=float(np.exp(log_b)), log_likelihood=log_likelihood,
        at_risk=total_r, churned=total_c, converged=bool(best.success and not on_bound and beats_geometric),
    )


def fit_sbg(survivors: list[int]) -> tuple[float, float]:
    """(alpha, beta) fitted to one cohort's survivor counts, month 0 first.

    survivors[t] is the number of the cohort still subscribed after t months (survivors[0] = the
    cohort size), e.g. [1000, 631, 468, 382, 326, 289, 262, 241]. Converted to exposures
    at_risk[t] = survivors[t], churned[t] = survivors[t] - survivors[t + 1], t = 0..T-1; the
    resulting likelihood equals Fader & Hardie's (2007) prod_t P(T = t)^churned * S(T)^survivors[T].
    Raises ValueError if the counts are negative, rise over time, or number fewer than three.
    """
    s = _as_int_array(survivors, "survivors")
    if s.size < 3:
        raise ValueError(f"need survivor counts for at least 3 months (2 exposure periods), got {s.size}")
    if np.any(np.diff(s) > 0):
        t = int(np.argmax(np.diff(s) > 0)) + 1
        raise ValueError(f"survivors must not increase: survivors[{t}] = {s[t]} > survivors[{t - 1}] = {s[t - 1]}")
    fit = fit_sbg_exposures(np.arange(s.size - 1), s[:-1], s[:-1] - s[1:])
    return fit.alpha, fit.beta


def monthly_rate(annual_rate: float) -> float:
    """Monthly discount rate equivalent to an annual one: (1 + annual)^(1/12) - 1 (fractions, 0.1 = 10 %)."""
    if not annual_rate > -1:
        raise ValueError(f"annual_rate must be > -1, got {annual_rate!r}")
    return (1.0 + annual_rate) ** (1.0 / 12.0) - 1.0


def derl(
    alpha: float, beta: float, tenure: ArrayLike, discount_rate: float, horizon: int | None = None,
) -> float | NDArray[np.float64]:
    """Discounted expected residual lifetime, in periods, of a subscriber alive at tenure n.

    DERL = sum_{k=1..horizon} S(n + k) / S(n) * (1 + d)^-k: each future month the subscriber is
    still subscribed counts 1, discounted by a full month per month ahead (end-of-month cash flows;
    the month in progress is not counted). Fader & Hardie's (2010) DERL, which counts the
    upcoming renewal undiscounted, is (1 + d) times this value.

    tenure: completed months, an integer >= 0 or an array of them; the result has the same shape
    (a float for a scalar). discount_rate: per period (see monthly_rate), >= 0. horizon=None is an
    infinite horizon, computed in closed form as 2F1(1, beta + n; alpha + beta + n; 1 / (1 + d)) - 1;
    it needs d > 0, or alpha > 1 when d = 0 (otherwise the expected lifetime is infinite). An
    integer horizon H sums the first H months exactly.
    """
    _check_params(alpha, beta)
    n = np.asarray(tenure, dtype=np.float64)
    if np.any(~np.isfinite(n)) or np.any(n < 0) or np.any(n != np.round(n)):
        raise ValueError(f"tenure must be whole months >= 0, got {tenure!r}")
    if not (np.isfinite(discount_rate) and discount_rate >= 0):
        raise ValueError(f"discount_rate must be a finite per-period rate >= 0, got {discount_rate!r}")
    x = 1.0 / (1.0 + discount_rate)
    if horizon is None:
        if discount_rate == 0 and alpha <= 1:
            raise ValueError(f"with discount_rate = 0 and alpha = {alpha} <= 1 the expected residual lifetime is "
                             "infinite; use a discount rate > 0 or a finite horizon")
        out = hyp2f1(1.0, beta + n, alpha + beta + n, x) - 1.0
    else:
        if int(horizon) != horizon or horizon < 0:
            raise ValueError(f"horizon must be None or an integer >= 0, got {horizon!r}")
        k = np.arange(int(horizon), dtype=np.float64)
        ratio = np.cumprod((beta + n[..., None] + k) / (alpha + beta + n[..., None] + k), axis=-1)
        out = np.sum(ratio * x ** (k + 1.0), axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def clv(
    margin_per_period: ArrayLike, alpha: float, beta: float, tenure: ArrayLike, discount_rate: float,
    horizon: int | None = None,
) -> float | NDArray[np.float64]:
    """Expected discounted residual value of a subscriber alive at tenure n, in the margin's currency.

    margin_per_period (e.g. CNY per month, constant over the lifetime) times
    derl(alpha, beta, tenure, discount_rate, horizon); see derl for timing and discounting.
    margin_per_period and tenure broadcast together.
    """
    value = np.asarray(margin_per_period, dtype=np.float64) * derl(alpha, beta, tenure, discount_rate, horizon)
    return float(value) if np.ndim(value) == 0 else value
