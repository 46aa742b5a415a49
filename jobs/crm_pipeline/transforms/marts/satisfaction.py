"""`satisfaction_drivers`: survey period x driver, from the silver `survey` table.

Per survey period (a calendar month of `survey_date`) the overall score is regressed on the three
driver scores by ordinary least squares with an intercept:

    overall_score = b0 + b_service * service_score + b_quality * quality_score + b_value * value_score + e

The work is split so that Spark never ships respondent rows to the driver:

1. `survey_moments` (Spark, pure): one row per period holding the sufficient statistics of the
   regression, i.e. n and the exact integer sums that make up X'X, X'y and y'y.
2. `ols_from_moments` (numpy/scipy, tiny): the regression from those moments.
3. `satisfaction_drivers` / `satisfaction_drivers_frame`: the published rows, one per period and driver.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from functools import reduce
from itertools import combinations_with_replacement
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from crm_pipeline.feeds import table_spec

DRIVERS: dict[str, str] = {"service": "service_score", "quality": "quality_score", "value": "value_score"}
RESPONSE: tuple[str, str] = ("overall", "overall_score")
INTERCEPT = "intercept"
VARIABLES: tuple[str, ...] = (*DRIVERS, RESPONSE[0])
_SCORE_COLUMNS: dict[str, str] = {**DRIVERS, RESPONSE[0]: RESPONSE[1]}

TABLE = "satisfaction_drivers"


def moment_column(a: str, b: str | None = None) -> str:
    """Name of a moment column: `sum_<a>` for a first moment, `sum_<a>_<b>` for a cross product.

    `a` and `b` are names from VARIABLES; the pair is taken in VARIABLES order, so
    `moment_column("overall", "service") == moment_column("service", "overall") == "sum_service_overall"`.
    """
    if b is None:
        return f"sum_{a}"
    first, second = sorted((a, b), key=VARIABLES.index)
    return f"sum_{first}_{second}"


def _month_range(month: date) -> tuple[date, date]:
    start = month.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1) - timedelta(days=1)
    return start, end


def _in_months(day: Column, months: Sequence[date]) -> Column:
    ranges = sorted({_month_range(m) for m in months})
    if not ranges:
        return F.lit(False)
    return reduce(lambda acc, r: acc | day.between(F.lit(r[0]), F.lit(r[1])),
                  ranges[1:], day.between(F.lit(ranges[0][0]), F.lit(ranges[0][1])))


def survey_moments(surveys: DataFrame, months: list[date] | None = None) -> DataFrame:
    """Sufficient statistics of the drivers regression, one row per survey period.

    Grain: survey period (calendar month of `survey_date`); keys period_start, period_end.
    Columns: `n` (long, responses) and, for the variables service, quality, value, overall
    (the `*_score` columns, 1-10 points), every first moment `sum_<a>` and every cross product
    `sum_<a>_<b>` (a before b in that order, squares included), all exact longs. With
    X = [1, service, quality, value] and y = overall they give X'X, X'y and y'y exactly.

    A response with a NULL in any of the four scores is left out. `months`, when given, keeps only
    the calendar months containing those dates (filtered on `survey_date`, so partitions prune);
    an empty list gives no rows.
    """
    day = F.col("survey_date")
    rows = surveys.where(reduce(lambda acc, c: acc & F.col(c).isNotNull(),
                                _SCORE_COLUMNS.values(), day.isNotNull()))
    if months is not None:
        rows = rows.where(_in_months(day, months))
    score = {v: F.col(c).cast("long") for v, c in _SCORE_COLUMNS.items()}
    sums = [F.sum(score[v]).alias(moment_column(v)) for v in VARIABLES]
    products = [F.sum(score[a] * score[b]).alias(moment_column(a, b))
                for a, b in combinations_with_replacement(VARIABLES, 2)]
    start = F.trunc(day, "month")
    return rows.groupBy(start.alias("period_start"), F.last_day(start).alias("period_end")).agg(
        F.count(F.lit(1)).cast("long").alias("n"), *sums, *products
    )


@dataclass(frozen=True)
class OlsResult:
    """An OLS fit with intercept; arrays are aligned with `names` (the intercept first).

    `std_coefficients[0]` (the intercept's) is NaN: a standardised model has no intercept.
    """

    names: tuple[str, ...]
    n: int
    df_resid: int
    coefficients: np.ndarray
    std_errors: np.ndarray
    t_values: np.ndarray
    p_values: np.ndarray
    std_coefficients: np.ndarray
    r_squared: float
    sigma2: float

    def row(self, name: str) -> dict[str, float]:
        """coefficient, std_error, t_value, p_value and std_coefficient of one regressor."""
        i = self.names.index(name)
        return {
            "coefficient": float(self.coefficients[i]),
            "std_error": float(self.std_errors[i]),
            "t_value": float(self.t_values[i]),
            "std_coefficient": float(self.std_coefficients[i]),
            "p_value": float(self.p_values[i]),
        }


def _centred(n: Any, xtx: np.ndarray, xty: np.ndarray, yty: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Centred cross products Sxx, Sxy, Syy of the non-constant columns of X and of y.

    Integer moments (sums of integer scores) are centred in exact integer arithmetic,
    n * sum(a * b) - sum(a) * sum(b), so the only rounding is the final division by n:
    no cancellation as in sum(x^2) - n * mean(x)^2 on floats.
    """
    p = xtx.shape[0]
    m = np.empty((p + 1, p + 1), dtype=object)
    m[:p, :p], m[:p, p], m[p, :p], m[p, p] = xtx, xty, xty, yty
    exact = all(float(v).is_integer() for v in m.ravel()) and float(n).is_integer()
    cast = int if exact else float
    m = np.vectorize(cast, otypes=[object])(m)
    scatter = cast(n) * m[1:, 1:] - np.outer(m[0, 1:], m[0, 1:])
    centred = np.vectorize(lambda v: float(v) / float(n), otypes=[float])(scatter)
    return centred[:-1, :-1], centred[:-1, -1], float(centred[-1, -1])


def ols_from_moments(
    n: int, xtx: np.ndarray, xty: np.ndarray, yty: float, names: Sequence[str]
) -> OlsResult | None:
    """OLS with intercept from the moments of X = [1, x_1 .. x_k] and y.

    `xtx` is X'X (p x p, p = k + 1, the constant column first, so xtx[0, 0] == n), `xty` is X'y,
    `yty` is y'y, `names` names X's columns. Standard errors are classical (sigma^2 = RSS / (n - p)),
    p-values two-sided from Student's t with n - p degrees of freedom, R^2 = 1 - RSS / TSS, and the
    standardised coefficients are beta_j x sd(x_j) / sd(y) with sample standard deviations.

    The slopes are solved on the correlation scale (centred, unit-diagonal), which is as well
    conditioned as the data allow. Returns None when the fit is undefined: n <= p, a regressor or
    y without variance, or regressors that are (numerically) collinear.
    """
    from scipy import stats

    xtx, xty = np.asarray(xtx), np.asarray(xty)
    p = xtx.shape[0]
    if xtx.shape != (p, p) or xty.shape != (p,) or len(names) != p or p < 2:
        raise ValueError(f"moments do not fit {p} regressors named {list(names)}: "
                         f"X'X {xtx.shape}, X'y {xty.shape}")
    if int(n) <= p:
        return None
    sxx, sxy, syy = _centred(n, xtx, xty, yty)
    scale = np.sqrt(np.diag(sxx))
    if syy <= 0 or not np.all(scale > 0):
        return None
    corr = sxx / np.outer(scale, scale)
    if np.linalg.matrix_rank(corr) < p - 1:
        return None
    r_xy = sxy / (scale * np.sqrt(syy))
    beta = np.linalg.solve(corr, r_xy)
    slopes = beta * np.sqrt(syy) / scale
    means = np.asarray(xtx[0, 1:], dtype=float) / float(n)
    intercept = float(xty[0]) / float(n) - means @ slopes

    nn, df_resid = int(n), int(n) - p
    rss = max(syy * (1.0 - beta @ r_xy), 0.0)
    sigma2 = rss / df_resid
    sxx_inv = np.linalg.pinv(corr) / np.outer(scale, scale)
    var_slopes = sigma2 * np.diag(sxx_inv)
    var_intercept = sigma2 * (1.0 / nn + means @ sxx_inv @ means)
    std_errors = np.sqrt(np.r_[var_intercept, var_slopes])
    coefficients = np.r_[intercept, slopes]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_values = coefficients / std_errors
    p_values = 2.0 * stats.t.sf(np.abs(t_values), df_resid)
    return OlsResult(
        names=tuple(names), n=nn, df_resid=df_resid, coefficients=coefficients, std_errors=std_errors,
        t_values=t_values, p_values=p_values, std_coefficients=np.r_[np.nan, beta],
        r_squared=float(1.0 - rss / syy), sigma2=float(sigma2),
    )


def moments_matrices(row: Mapping[str, Any]) -> tuple[int, np.ndarray, np.ndarray, int]:
    """(n, X'X, X'y, y'y) of one `survey_moments` row, X = [1, service, quality, value], y = overall."""
    xs, y = tuple(DRIVERS), RESPONSE[0]
    n = int(row["n"])
    xtx = np.empty((len(xs) + 1, len(xs) + 1), dtype=object)
    xtx[0, 0] = n
    for i, a in enumerate(xs, start=1):
        xtx[0, i] = xtx[i, 0] = int(row[moment_column(a)])
        for j, b in enumerate(xs, start=1):
            xtx[i, j] = int(row[moment_column(a, b)])
    xty = np.array([int(row[moment_column(y)])] + [int(row[moment_column(a, y)]) for a in xs], dtype=object)
    return n, xtx, xty, int(row[moment_column(y, y)])


def satisfaction_drivers(moments_rows: Iterable[Any], min_respondents: int) -> list[dict[str, Any]]:
    """Rows of `crm.satisfaction_drivers` from collected `survey_moments` rows (Rows or mappings).

    Grain: survey period x driver (service, quality, value), ordered by period then driver.
    Columns as `schemas/tables/satisfaction_drivers.json`: coefficients are overall-score points per
    driver point, std_coefficient is beta x sd(driver) / sd(overall), r_squared and respondents (n)
    repeat on the period's three rows.
    A period with fewer than `min_respondents` responses, or whose regression is undefined (see
    `ols_from_moments`), produces no rows.
    """
    out: list[dict[str, Any]] = []
    rows = [r.asDict() if hasattr(r, "asDict") else dict(r) for r in moments_rows]
    for row in sorted(rows, key=lambda r: r["period_start"]):
        n, xtx, xty, yty = moments_matrices(row)
        if n < min_respondents:
            continue
        fit = ols_from_moments(n, xtx, xty, yty, (INTERCEPT, *DRIVERS))
        if fit is None:
            continue
        for driver in DRIVERS:
            out.append({
                "period_start": row["period_start"], "period_end": row["period_end"], "driver": driver,
                **fit.row(driver), "r_squared": fit.r_squared, "respondents": n,
            })
    return out


def satisfaction_drivers_frame(moments: DataFrame, min_respondents: int) -> DataFrame:
    """`crm.satisfaction_drivers` as a Spark DataFrame from a `survey_moments` frame.

    Collects the moments (one row per period) to the driver and fits there. The schema is the
    published table's (`schemas/tables/satisfaction_drivers.json`), also when there are no surveys
    and the frame is empty.
    """
    schema = table_spec(TABLE).spark_schema()
    rows = satisfaction_drivers(moments.collect(), min_respondents)
    return moments.sparkSession.createDataFrame([tuple(r[c] for c in schema.fieldNames()) for r in rows], schema)
