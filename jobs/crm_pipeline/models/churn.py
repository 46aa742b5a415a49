"""The churn model: features, fitting, out-of-time metrics, reasons, drift and scoring in Spark.

A subscriber-month is scored when the subscription is active at the month's end; the label is 1
when it becomes TERMINATED in M+1 or M+2 (docs/churn.md). Two scikit-learn pipelines are fitted
on a bounded driver-side sample of past labelled months: gradient boosting (the deployed model)
and an L2 logistic regression (the baseline it must beat). Both are evaluated on a later
labelled month they never saw: ROC AUC, top-decile lift, Expected Maximum Profit (Verbraken,
Verbeke and Baesens 2013), Brier score and a calibration table.

Nothing here is tuned to one operator's data: the trees learn their cut points, held-out
subscribers of the training months pick the number of trees, the tree depth and the feature
sampling, and reasons and drift use percentiles of the training sample.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "usage": ("voice_mou", "data_mb", "sms_count", "arpu_3m_fen"),
    "trend": ("mou_trend", "data_trend", "sms_trend", "revenue_trend", "offnet_share_change"),
    "activity": ("days_since_last_activity", "days_since_last_recharge", "recharge_count_3m",
                 "recharge_gap_max_days", "recharge_to_spend_3m", "suspended"),
    "care": ("complaints_3m", "regulator_complaints_3m", "ticket_satisfaction_3m", "low_rated_tickets_3m"),
    "offnet": ("offnet_share",),
    "circle": ("circle_size", "circle_churned", "circle_churn_share"),
    "profile": ("tenure_months", "age", "is_postpaid", "is_group_line", "gen_rank", "allowance_use",
                "arrears_fen", "on_time_share", "current_value_index", "potential_value_index",
                "segment_valuable", "segment_sub_valuable", "segment_potential"),
}
"""Model inputs by theme (the ablation in docs/churn.md drops one theme at a time)."""

FEATURES: tuple[str, ...] = tuple(f for group in FEATURE_GROUPS.values() for f in group)
"""Every model input, all DOUBLE (NULL allowed: the models handle missing values)."""

SCORE_DECIMALS = 6
"""Scores are rounded so that reruns are bit-identical whatever the batch split."""


# ---------------------------------------------------------------------------------------------
# Fitting


class TooFewChurners(ValueError):
    """The training rows hold too few churners (or only churners) to fit a model."""


@dataclass(frozen=True)
class ChurnParams:
    """The `churn` section of config/analytics.json that shapes the models."""

    gradient_boosting: Mapping[str, float]
    logistic_c: float
    min_positives: int

    @classmethod
    def from_config(cls, d: Mapping[str, object]) -> ChurnParams:
        return cls(dict(d["gradient_boosting"]), float(d["logistic"]["C"]), int(d["min_positives"]))


class SubscriberFoldBoosting:
    """Gradient boosting fitted as `folds` HistGradientBoostingClassifier members: member k learns
    from the subscribers outside fold k and stops adding trees when the log-loss on fold k's
    subscribers has not improved for `n_iter_no_change` rounds. The score is the members' mean
    probability, so every training row is used by all members but one. `oof_log_loss` is the
    log-loss of each row's score from the member that did not learn from it.

    Why not HistGradientBoosting's own early stopping: it holds out random rows, and a subscriber
    has one row per training month with nearly the same features and, for a churner, the same label
    twice (terminated in M+1 is a positive label in M and in M-1). The held-out loss then rewards
    memorised subscribers and stops late; holding out whole subscribers measures what scoring
    needs, subscribers the model has not seen. Folds are drawn by subscriber with the churn rate
    kept per fold (StratifiedGroupKFold), from a fixed seed.
    """

    def __init__(self, params: Mapping[str, float]):
        self.params = dict(params)
        self.members: list = []
        self.oof_log_loss = math.nan
        self.classes_ = np.array([0, 1])

    def fit(self, x: pd.DataFrame, y: pd.Series, groups: pd.Series) -> SubscriberFoldBoosting:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.metrics import log_loss
        from sklearn.model_selection import StratifiedGroupKFold

        p = self.params
        folds = StratifiedGroupKFold(int(p["folds"]), shuffle=True, random_state=int(p["random_state"]))
        y = pd.Series(np.asarray(y), index=x.index)
        oof = np.zeros(len(y))
        self.members = []
        for k, (fit_rows, stop_rows) in enumerate(folds.split(x, y, np.asarray(groups))):
            member = HistGradientBoostingClassifier(
                max_iter=int(p["max_iter"]), learning_rate=float(p["learning_rate"]), max_depth=int(p["max_depth"]),
                min_samples_leaf=int(p["min_samples_leaf"]), l2_regularization=float(p["l2_regularization"]),
                max_features=float(p.get("max_features", 1.0)), early_stopping=True,
                n_iter_no_change=int(p["n_iter_no_change"]), scoring="loss", random_state=int(p["random_state"]) + k,
            )
            self.members.append(member.fit(x.iloc[fit_rows], y.iloc[fit_rows],
                                           X_val=x.iloc[stop_rows], y_val=y.iloc[stop_rows]))
            oof[stop_rows] = member.predict_proba(x.iloc[stop_rows])[:, 1]
        self.oof_log_loss = float(log_loss(y, oof, labels=[0, 1]))
        return self

    @property
    def n_iter_(self) -> list[int]:
        """Trees per member, as early stopping chose them."""
        return [m.n_iter_ for m in self.members]

    def predict_proba(self, x: pd.DataFrame) -> np.ndarray:
        p = np.mean([m.predict_proba(x)[:, 1] for m in self.members], axis=0)
        return np.column_stack([1.0 - p, p])


def boosting_candidates(settings: Mapping[str, object]) -> list[dict]:
    """The settings of every candidate boosting: the fixed ones, crossed with each combination of
    the `search` lists (e.g. {"max_depth": [2, 3], "max_features": [0.5, 1.0]}: four candidates)."""
    import itertools

    fixed = {k: v for k, v in settings.items() if k != "search"}
    search = dict(settings.get("search") or {})
    names = sorted(search)
    return [{**fixed, **dict(zip(names, values))} for values in itertools.product(*(search[n] for n in names))]


def fit_boosting(x: pd.DataFrame, y: pd.Series, groups: pd.Series, settings: Mapping[str, object]) -> SubscriberFoldBoosting:
    """Fit every candidate of `settings` on the same subscriber folds and keep the one with the
    lowest out-of-fold log-loss: the training data, never the test month, picks tree depth and
    feature sampling. The kept model's `params` say which settings won."""
    best = None
    for candidate in boosting_candidates(settings):
        model = SubscriberFoldBoosting(candidate).fit(x, y, groups)
        if best is None or model.oof_log_loss < best.oof_log_loss:
            best = model
    return best


def fit_models(x: pd.DataFrame, y: pd.Series, params: ChurnParams, features=FEATURES) -> dict[str, object]:
    """Fit {"gradient_boosting": ..., "logistic_regression": ...} on the same rows.

    `x` carries `subscriber_id` (the folds of the boosting are drawn by subscriber). Gradient
    boosting: `fit_boosting`, shallow trees, the number of trees, the depth and the feature
    sampling chosen on held-out subscribers. Logistic regression: median imputation with
    missing-value indicators, standardised features, L2 penalty C. Both are deterministic (fixed
    seeds). Raises TooFewChurners with fewer than `min_positives` churner rows, or fewer churning
    subscribers than the boosting has folds.
    """
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    positives, folds = int(y.sum()), int(params.gradient_boosting["folds"])
    churning = x.loc[np.asarray(y) == 1, "subscriber_id"].nunique()
    if positives < params.min_positives or churning < folds or positives == len(y):
        raise TooFewChurners(f"churn model: {positives} churners ({churning} subscribers) in {len(y)} training rows; "
                             f"fitting needs at least {params.min_positives} churners, {folds} churning subscribers "
                             "(one per fold) and some non-churners")
    logistic = make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                             StandardScaler(), LogisticRegression(C=params.logistic_c, max_iter=5000))
    xs = x[list(features)].astype("float64")
    # A feature with no value at all in the training rows (a lake's first month has no trends; a base
    # without prepaid lines no top-ups) cannot be binned: the trees see it as a constant, never split
    # on it, and ignore it when scoring. The logistic pipeline's imputer keeps such columns itself.
    constant = xs.fillna({f: 0.0 for f in xs.columns if xs[f].isna().all()})
    boosting = fit_boosting(constant, y, x["subscriber_id"], params.gradient_boosting)
    return {"gradient_boosting": boosting, "logistic_regression": logistic.fit(xs, y)}


def predict(model, x: pd.DataFrame, features=FEATURES) -> np.ndarray:
    """Churn probability per row, rounded to SCORE_DECIMALS."""
    if len(x) == 0:
        return np.empty(0)
    return np.round(model.predict_proba(x[list(features)].astype("float64"))[:, 1], SCORE_DECIMALS)


# ---------------------------------------------------------------------------------------------
# Evaluation


def top_decile_lift(y: np.ndarray, score: np.ndarray) -> float:
    """Churn rate among the 10 % highest scores (ceil, ties broken by row order) over the base rate."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    k = max(1, math.ceil(0.1 * len(y)))
    top = np.argsort(-score, kind="mergesort")[:k]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else math.nan


def lift_curve(y: np.ndarray, score: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Cumulative gains by decile of score (highest first): decile, targeted_share, churners_captured_share,
    cumulative_lift, churn_rate (of the decile alone)."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="mergesort")
    ys = y[order]
    n, total = len(ys), ys.sum()
    rows = []
    for d in range(1, bins + 1):
        lo, hi = math.ceil((d - 1) * n / bins), math.ceil(d * n / bins)
        captured = ys[:hi].sum()
        rows.append((d, hi / n if n else math.nan, captured / total if total else math.nan,
                     (captured / hi) / (total / n) if hi and total else math.nan,
                     ys[lo:hi].mean() if hi > lo else math.nan))
    return pd.DataFrame(rows, columns=["decile", "targeted_share", "churners_captured_share", "cumulative_lift",
                                       "churn_rate"])


def calibration_table(y: np.ndarray, score: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Equal-count bins of the predicted score (lowest first): bin, n, mean_score, observed_rate."""
    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    order = np.argsort(score, kind="mergesort")
    rows = []
    for b, idx in enumerate(np.array_split(order, bins), start=1):
        if len(idx):
            rows.append((b, len(idx), float(score[idx].mean()), float(y[idx].mean())))
    return pd.DataFrame(rows, columns=["bin", "n", "mean_score", "observed_rate"])


@dataclass(frozen=True)
class EmpParams:
    """Expected Maximum Profit for churn (Verbraken et al. 2013): clv of a retained customer, incentive
    cost d and contact cost f (same currency), acceptance rate gamma ~ Beta(alpha, beta)."""

    clv: float
    d: float
    f: float
    alpha: float
    beta: float

    @classmethod
    def from_config(cls, d: Mapping[str, object]) -> EmpParams:
        return cls(float(d["clv_cny"]), float(d["incentive_cny"]), float(d["contact_cny"]),
                   float(d["alpha"]), float(d["beta"]))


def _roc_hull(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper convex hull of the ROC curve as (F1 = false-positive rates, F0 = true-positive rates),
    from (0, 0) to (1, 1); customers are targeted from the highest score down."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    hull: list[tuple[float, float]] = []
    for p in zip(fpr, tpr):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:  # hull[-1] not above the chord
                hull.pop()
            else:
                break
        hull.append((float(p[0]), float(p[1])))
    pts = np.array(hull)
    return pts[:, 0], pts[:, 1]


def emp_churn(y, score, p: EmpParams) -> float:
    """Expected Maximum Profit per customer of targeting by `score` (higher = more likely to churn).

    Profit of targeting the share reached at ROC point (F1, F0), per customer of the base
    (pi0 = churner share, pi1 = 1 - pi0, delta = d / clv, phi = f / clv):

        P(gamma) = clv * [(gamma (1 - delta) - phi) pi0 F0 - (delta + phi) pi1 F1]

    For each gamma the best point is on the ROC convex hull; moving from hull point i-1 to i pays
    when gamma > g_i = (pi1 (delta + phi) dF1 / (pi0 dF0) + phi) / (1 - delta). EMP integrates the best
    profit over gamma ~ Beta(alpha, beta) in closed form with the regularised incomplete beta.
    """
    from scipy.special import betainc

    y, score = np.asarray(y, dtype=float), np.asarray(score, dtype=float)
    pi0 = y.mean()
    if not 0 < pi0 < 1:
        return math.nan
    pi1 = 1 - pi0
    delta, phi = p.d / p.clv, p.f / p.clv
    f1, f0 = _roc_hull(y, score)
    df1, df0 = np.diff(f1), np.diff(f0)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(df0 > 0, (pi1 * (delta + phi) * df1 / np.where(df0 > 0, pi0 * df0, 1.0) + phi) / (1 - delta),
                     np.inf)
    bounds = np.concatenate([[0.0], np.clip(np.maximum.accumulate(g), 0.0, 1.0), [1.0]])
    lo, hi = bounds[:-1], bounds[1:]
    prob = betainc(p.alpha, p.beta, hi) - betainc(p.alpha, p.beta, lo)
    mean_part = p.alpha / (p.alpha + p.beta) * (betainc(p.alpha + 1, p.beta, hi) - betainc(p.alpha + 1, p.beta, lo))
    total = (1 - delta) * pi0 * f0 * mean_part - (phi * pi0 * f0 + (delta + phi) * pi1 * f1) * prob
    return float(p.clv * total.sum())


@dataclass(frozen=True)
class Evaluation:
    """Out-of-time metrics of one fitted model on a test month."""

    auc: float | None
    top_decile_lift: float | None
    emp: float | None
    brier: float | None
    base_rate: float
    calibration: pd.DataFrame
    lift: pd.DataFrame


def evaluate(y: np.ndarray, score: np.ndarray, emp: EmpParams) -> Evaluation:
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.asarray(y, dtype=int)
    two = len(set(y.tolist())) == 2
    return Evaluation(
        auc=float(roc_auc_score(y, score)) if two else None,
        top_decile_lift=top_decile_lift(y, score) if y.sum() else None,
        emp=emp_churn(y, score, emp) if two else None,
        brier=float(brier_score_loss(y, score)) if len(y) else None,
        base_rate=float(y.mean()) if len(y) else math.nan,
        calibration=calibration_table(y, score),
        lift=lift_curve(y, score),
    )


# ---------------------------------------------------------------------------------------------
# Drift


def reference_bins(values: pd.Series, bins: int) -> dict:
    """Decile edges of a feature in the training sample and the share of rows in each bin.

    Bins: (-inf, e1], (e1, e2], ..., (ek, inf) on the distinct quantile edges, plus a last bin for
    missing values. Returns {"edges": [...], "shares": [...]} (len(shares) = len(edges) + 2).
    """
    x = pd.to_numeric(values, errors="coerce").astype("float64")
    known = x.dropna()
    qs = np.quantile(known, np.arange(1, bins) / bins) if len(known) else np.array([])
    edges = sorted(set(float(q) for q in qs))
    return {"edges": edges, "shares": bin_shares(x.to_numpy(), edges).tolist()}


def bin_index(x: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bin of each value for `edges` (see reference_bins); missing values go to bin len(edges) + 1."""
    x = np.asarray(x, dtype="float64")
    idx = np.searchsorted(np.asarray(edges, dtype="float64"), x, side="left")
    return np.where(np.isnan(x), len(edges) + 1, idx)


def bin_shares(x: np.ndarray, edges: list[float]) -> np.ndarray:
    counts = np.bincount(bin_index(x, edges), minlength=len(edges) + 2).astype(float)
    return counts / counts.sum() if counts.sum() else counts


PSI_FLOOR = 1e-4
"""Share given to an empty bin so that the logarithm stays finite (a common convention)."""


def psi(expected: list[float] | np.ndarray, actual: list[float] | np.ndarray) -> float:
    """Population stability index: sum over bins of (actual - expected) * ln(actual / expected)."""
    e = np.maximum(np.asarray(expected, dtype=float), PSI_FLOOR)
    a = np.maximum(np.asarray(actual, dtype=float), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


# ---------------------------------------------------------------------------------------------
# Reasons


def _cny(fen: float) -> str:
    return f"CNY {fen / 100:.0f}"


def _change(v: float) -> str:
    """A log-ratio trend as a percentage change ("+1000%" at most, as words do not need more)."""
    return f"{math.expm1(min(v, math.log(11.0))):+.0%}"


def describe(feature: str, v: float) -> str:
    """Plain words for a feature value that pushed the churn score up."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return {"ticket_satisfaction_3m": "no rated service contact", "allowance_use": "plan without data allowance",
                "recharge_to_spend_3m": "no spend to compare top-ups with"}.get(feature, f"{feature} unknown")
    texts = {
        "voice_mou": lambda: f"{v:.0f} voice minutes this month",
        "data_mb": lambda: f"{v / 1024:.1f} GB of data this month",
        "sms_count": lambda: f"{v:.0f} SMS this month",
        "arpu_3m_fen": lambda: f"spend {_cny(v)}/month over 3 months",
        "mou_trend": lambda: f"calling {_change(v)} against the 3 months before",
        "data_trend": lambda: f"data use {_change(v)} against the 3 months before",
        "sms_trend": lambda: f"SMS {_change(v)} against the 3 months before",
        "revenue_trend": lambda: f"spend {_change(v)} against the 3 months before",
        "offnet_share_change": lambda: (f"share of calls to other operators {v * 100:+.0f} points against "
                                        "the 3 months before"),
        "days_since_last_activity": lambda: f"no own call, SMS or data session for {v:.0f} days",
        "days_since_last_recharge": lambda: f"last top-up {v:.0f} days ago",
        "recharge_count_3m": lambda: f"{v:.0f} top-ups in 3 months",
        "recharge_gap_max_days": lambda: f"longest gap between top-ups {v:.0f} days",
        "recharge_to_spend_3m": lambda: f"top-ups cover {v:.0%} of spend over 3 months",
        "suspended": lambda: "line suspended at month end" if v >= 0.5 else "line active at month end",
        "complaints_3m": lambda: f"{v:.0f} complaints in 3 months",
        "regulator_complaints_3m": lambda: f"{v:.0f} complaints escalated to the regulator in 3 months",
        "ticket_satisfaction_3m": lambda: f"rated service contacts {v:.1f}/5",
        "low_rated_tickets_3m": lambda: f"{v:.0f} service contacts rated 1-2/5",
        "offnet_share": lambda: f"{v:.0%} of call minutes with other operators",
        "circle_size": lambda: f"{v:.0f} frequent contacts",
        "circle_churned": lambda: f"{v:.0f} frequent contacts left the network in 3 months",
        "circle_churn_share": lambda: f"{v:.0%} of frequent contacts left the network in 3 months",
        "tenure_months": lambda: f"customer for {v:.0f} months",
        "age": lambda: f"aged {v:.0f}",
        "is_postpaid": lambda: "postpaid plan" if v >= 0.5 else "prepaid plan",
        "is_group_line": lambda: "enterprise group line" if v >= 0.5 else "personal line",
        "gen_rank": lambda: f"on a {['2G', '3G', '4G', '5G'][int(min(max(v, 0), 3))]} line",
        "allowance_use": lambda: f"uses {v:.0%} of the plan's data allowance",
        "arrears_fen": lambda: f"{_cny(v)} of overdue bills",
        "on_time_share": lambda: f"{v:.0%} of bills paid on time",
        "current_value_index": lambda: f"current value index {v:.0f}/100",
        "potential_value_index": lambda: f"potential value index {v:.0f}/100",
        "segment_valuable": lambda: "valuable customer" if v >= 0.5 else "not in the valuable segment",
        "segment_sub_valuable": lambda: "sub-valuable customer" if v >= 0.5 else "not in the sub-valuable segment",
        "segment_potential": lambda: "potential-value customer" if v >= 0.5 else "not in the potential segment",
    }
    text = texts.get(feature)
    return text() if text else f"{feature} = {v:g}"


def contributions(model, x: pd.DataFrame, features=FEATURES) -> np.ndarray:
    """Per-row, per-feature contributions to the score in log-odds: for gradient boosting the mean
    over its members of their TreeSHAP values (exact per member; the members' mean probability has
    no exact tree attribution, the mean of their log-odds attributions ranks the same drivers); for
    the logistic pipeline coefficient x standardised value, its missing indicator folded in."""
    xs = x[list(features)].astype("float64")
    if isinstance(model, SubscriberFoldBoosting):
        import shap

        values = [shap.TreeExplainer(m).shap_values(xs) for m in model.members]
        return np.mean([np.asarray(v[1] if isinstance(v, list) else v) for v in values], axis=0)
    imputer, scaler, lr = model.steps[0][1], model.steps[1][1], model.steps[2][1]
    z = scaler.transform(imputer.transform(xs))
    parts = (z - 0.0) * lr.coef_[0]  # standardised features have mean 0 in training
    n = len(features)
    out = parts[:, :n].copy()
    for j, feature_idx in enumerate(imputer.indicator_.features_):
        out[:, feature_idx] += parts[:, n + j]
    return out


def top_reasons(model, x: pd.DataFrame, max_reasons: int, features=FEATURES) -> list[str]:
    """JSON text per row: up to `max_reasons` features that raised the score most (positive
    contributions only), each {"reason": plain words, "feature": name, "impact": log-odds}."""
    if len(x) == 0:
        return []
    phi = contributions(model, x, features)
    values = x[list(features)].astype("float64").to_numpy()
    out = []
    for i in range(len(x)):
        order = [j for j in np.argsort(-phi[i], kind="mergesort")[:max_reasons] if phi[i, j] > 0]
        out.append(json.dumps([{"reason": describe(features[j], float(values[i, j])), "feature": features[j],
                                "impact": round(float(phi[i, j]), 4)} for j in order], ensure_ascii=False))
    return out


# ---------------------------------------------------------------------------------------------
# Scoring in Spark


SCORES_DDL = "month date, subscriber_id string, churn_score double, churn_model_version string"


def score_in_spark(features, models: Mapping[str, object], version_of_month: Mapping, feature_list=FEATURES):
    """churn_score for every row of `features` (month, subscriber_id, FEATURES) whose month has a model.

    `models` maps model_version -> fitted estimator, `version_of_month` month -> model_version. The
    models are broadcast and applied per Arrow batch with mapInPandas, so the rows never reach the
    driver. Lazy: nothing runs until the result is used.
    """
    from pyspark.sql import functions as F

    if not version_of_month:
        return features.sparkSession.createDataFrame([], SCORES_DDL)
    pairs = [x for m, v in sorted(version_of_month.items()) for x in (F.lit(m), F.lit(v))]
    frame = features.withColumn("churn_model_version", F.create_map(*pairs)[F.col("month")]).where(
        F.col("churn_model_version").isNotNull()).select("month", "subscriber_id", "churn_model_version",
                                                        *feature_list)
    models_b = features.sparkSession.sparkContext.broadcast(dict(models))
    feature_list = tuple(feature_list)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        fitted = models_b.value
        for pdf in batches:
            out = np.empty(len(pdf))
            for version, idx in pdf.groupby("churn_model_version", sort=False).indices.items():
                out[idx] = predict(fitted[version], pdf.iloc[idx], feature_list)
            yield pd.DataFrame({"month": pdf["month"], "subscriber_id": pdf["subscriber_id"], "churn_score": out,
                                "churn_model_version": pdf["churn_model_version"]})

    return frame.mapInPandas(score, SCORES_DDL)


REASONS_DDL = "month date, subscriber_id string, top_reasons string"


def reasons_in_spark(rows, models: Mapping[str, object], max_reasons: int, feature_list=FEATURES):
    """top_reasons JSON per row of `rows` (month, subscriber_id, churn_model_version, FEATURES), each
    explained by the model that scored it; mapInPandas with the models broadcast."""
    models_b = rows.sparkSession.sparkContext.broadcast(dict(models))
    feature_list = tuple(feature_list)

    def explain(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        fitted = models_b.value
        for pdf in batches:
            out = np.empty(len(pdf), dtype=object)
            for version, idx in pdf.groupby("churn_model_version", sort=False).indices.items():
                out[idx] = top_reasons(fitted[version], pdf.iloc[idx], max_reasons, feature_list)
            yield pd.DataFrame({"month": pdf["month"], "subscriber_id": pdf["subscriber_id"], "top_reasons": out})

    return rows.select("month", "subscriber_id", "churn_model_version", *feature_list).mapInPandas(
        explain, REASONS_DDL)
