"""Next-generation (5G) migration candidates: who, below the newest network generation, will upgrade.

Published as `crm.migration_candidates`, grain month x subscriber on a generation below `target_gen`
(closing subscribers only), keys (month, subscriber_id). Columns:

    month          DATE    first day of the scored month
    subscriber_id  STRING
    msisdn_key     STRING  keyed hash of the MSISDN (never the number itself)
    network_gen    STRING  generation at month end ('2G' .. '4G')
    target_gen     STRING  generation the campaign moves the subscriber to (the newest, '5G')
    propensity     DOUBLE  model probability, in [0, 1], of a higher generation next month (6 decimals)
    data_mb_3m     DOUBLE  mean monthly data over the month and the two before, MB (2^20 bytes)
    reason         STRING  up to two plain-words drivers, or "combined usage profile"
    priority_rank  INT     1 = most likely to upgrade, within the month (ties by subscriber_id)

How the propensity is learned: `upgrade_labels` marks each closing below-newest subscriber_month
row with whether the same subscriber is on a higher generation in the next calendar month. A
HistGradientBoostingClassifier is fitted on a bounded, deterministic sample collected to the
driver (`training_sample`, `fit`); it is checked out of time against the analyst's hand rule
"heavy data users first" (score = data_mb_3m) by `evaluate_out_of_time`, and applied to the full
base inside Spark by `score_candidates` (mapInPandas, model broadcast; the base never reaches the
driver). No threshold here depends on one operator's data: the model learns its cut points, and
reasons use percentiles of the training sample.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

GENERATIONS = ("2G", "3G", "4G", "5G")
"""Network generations, oldest first; the newest is the last."""

FEATURES = (
    "gen_rank",
    "data_mb_3m",
    "data_mb",
    "data_growth",
    "allowance_use",
    "arpu_3m_fen",
    "voice_mou",
    "age",
    "tenure_months",
    "is_postpaid",
    "potential_value_index",
)
"""Model inputs, all DOUBLE (NULL / NaN allowed), defined once in `feature_columns`."""

DATA_GROWTH_PRIOR_MB = 100.0
"""MB added to both sides of the data growth ratio, so that a line going from 1 MB to 5 MB does not
read as a 5x surge; small next to any smartphone's monthly use, so it does not blunt real growth."""

NO_REASON = "combined usage profile"
"""Reason given when no single feature stands out in the direction of upgrading."""

CANDIDATES_SCORED_DDL = (
    "month date, subscriber_id string, msisdn_key string, network_gen string, target_gen string, "
    "propensity double, data_mb_3m double, reason string"
)
"""Schema of the scoring step's output, before priority_rank is added."""

REASON_TOPICS = {"data_mb_3m": "data volume", "data_mb": "data volume"}
"""Features that say the same thing in plain words; a reason names at most one feature per topic
(other features are their own topic), so "heavy data use" is not followed by "high data use this month"."""

PROPENSITY_DECIMALS = 6
"""Propensities are rounded so that reruns are bit-identical whatever the batch split."""

MB_PER_GB = 1024.0
FEN_PER_CNY = 100.0


def gen_rank(col: Column) -> Column:
    """0-based position of a network generation in GENERATIONS ('2G' -> 0 ... '5G' -> 3); NULL if unknown."""
    pos = F.array_position(F.array(*[F.lit(g) for g in GENERATIONS]), col)
    return F.when(pos > 0, (pos - 1).cast("int"))


def below_generation(rows: DataFrame, target_gen: str) -> DataFrame:
    """Rows active at month end (closing) on a known generation below `target_gen`."""
    return rows.where(F.col("closing") & (gen_rank(F.col("network_gen")) < GENERATIONS.index(target_gen)))


def upgrade_labels(rows: DataFrame) -> DataFrame:
    """Label subscriber_month rows with whether the subscriber moved up a generation the next month.

    Grain: month x subscriber, for rows that are closing (active at month end), on a known generation
    below the newest, and whose subscriber has a row (with a known generation) in the next calendar
    month. label = 1 if the generation rank in month M+1 is higher than in month M, else 0 (no
    change or a downgrade). Rows without a next-month row get no label and are dropped, so the
    latest month of `rows` is never labelled. All columns of `rows` are kept, plus `label` INT.
    """
    nxt = rows.select(
        "subscriber_id",
        F.add_months(F.col("month"), -1).alias("month"),
        gen_rank(F.col("network_gen")).alias("_next_rank"),
    ).where(F.col("_next_rank").isNotNull())
    current = below_generation(rows, GENERATIONS[-1])
    return (
        current.join(nxt, ["month", "subscriber_id"], "inner")
        .withColumn("label", (F.col("_next_rank") > gen_rank(F.col("network_gen"))).cast("int"))
        .drop("_next_rank")
    )


def _double(name: str) -> Column:
    return F.col(name).cast("double")


def feature_columns() -> list[Column]:
    """The model's inputs as DOUBLE columns named as in FEATURES, from subscriber_month columns.

    gen_rank: 0 = 2G .. 3 = 5G. data_mb_3m, data_mb: MB per month. data_growth: this month's data
    over the 3-month mean, both plus DATA_GROWTH_PRIOR_MB (1 = steady). allowance_use: data_mb over
    the plan's included_data_mb (1 = allowance used up; NULL when the plan has no data allowance).
    arpu_3m_fen: fen per month. voice_mou: minutes. age, tenure_months: years, whole months.
    is_postpaid: 1 / 0 (NULL if unknown). potential_value_index: 0-100.
    """
    prior = F.lit(DATA_GROWTH_PRIOR_MB)
    columns = {
        "gen_rank": gen_rank(F.col("network_gen")).cast("double"),
        "data_mb_3m": _double("data_mb_3m"),
        "data_mb": _double("data_mb"),
        "data_growth": (_double("data_mb") + prior) / (_double("data_mb_3m") + prior),
        "allowance_use": F.when(F.col("included_data_mb") > 0, _double("data_mb") / _double("included_data_mb")),
        "arpu_3m_fen": _double("arpu_3m_fen"),
        "voice_mou": _double("voice_mou"),
        "age": _double("age"),
        "tenure_months": _double("tenure_months"),
        "is_postpaid": F.when(F.col("payment_type") == "POSTPAID", 1.0).when(F.col("payment_type") == "PREPAID", 0.0),
        "potential_value_index": _double("potential_value_index"),
    }
    return [columns[name].alias(name) for name in FEATURES]


def training_sample(labelled: DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """Collect a bounded Bernoulli sample of labelled rows to the driver, as month, subscriber_id, FEATURES, label.

    fraction = min(1, max_rows / count) with Spark's `sample(fraction, seed)`, so about max_rows rows
    at most; the result is sorted by (month, subscriber_id) so that the fit does not depend on the
    order the partitions arrive in.
    """
    n = labelled.count()
    frame = labelled.select("month", "subscriber_id", *feature_columns(), F.col("label").cast("int"))
    fraction = min(1.0, max_rows / n) if n else 1.0
    if fraction < 1.0:
        frame = frame.sample(withReplacement=False, fraction=fraction, seed=seed)
    pdf = frame.toPandas()
    return pdf.sort_values(["month", "subscriber_id"], kind="mergesort").reset_index(drop=True)


@dataclass(frozen=True)
class MigrationModelParams:
    """Model settings, from config (`from_dict`). Gradient boosting (HistGradientBoostingClassifier)
    kept modest: shallow trees, a few hundred iterations at most, leaves large enough not to chase
    single subscribers. With fewer than `boosting_min_positives` upgraders in the training sample,
    trees have too few events to split on and an L2-regularised logistic regression (inverse
    strength `logistic_c`, standardised features, median imputation with missing indicators) is
    fitted instead: a sample-size rule, the same for any operator."""

    max_depth: int
    max_iter: int
    learning_rate: float
    min_samples_leaf: int
    l2_regularization: float
    random_state: int
    boosting_min_positives: int = 0
    logistic_c: float = 1.0

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> MigrationModelParams:
        return cls(
            max_depth=int(d["max_depth"]),
            max_iter=int(d["max_iter"]),
            learning_rate=float(d["learning_rate"]),
            min_samples_leaf=int(d["min_samples_leaf"]),
            l2_regularization=float(d["l2_regularization"]),
            random_state=int(d["random_state"]),
            boosting_min_positives=int(d.get("boosting_min_positives", 0)),
            logistic_c=float(d.get("logistic_c", 1.0)),
        )


def _params(params: MigrationModelParams | Mapping[str, object]) -> MigrationModelParams:
    return params if isinstance(params, MigrationModelParams) else MigrationModelParams.from_dict(params)


def fit(sample_pdf: pd.DataFrame, params: MigrationModelParams | Mapping[str, object]):
    """Fit the upgrade-propensity model on a driver-side sample (columns FEATURES and label 0/1).

    Returns a fitted sklearn HistGradientBoostingClassifier, or a logistic-regression pipeline when
    the sample has fewer than `boosting_min_positives` upgraders; predict_proba(...)[:, 1] is the
    probability of a higher generation next month. Missing feature values are handled by the model.
    Deterministic: fixed random_state, no early-stopping split.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = _params(params)
    classes = sorted(sample_pdf["label"].dropna().unique().tolist())
    if classes != [0, 1]:
        raise ValueError(
            f"migration model: the training sample of {len(sample_pdf)} rows has label values {classes}; "
            "fitting needs both upgraders (1) and non-upgraders (0)"
        )
    x, y = sample_pdf[list(FEATURES)].astype("float64"), sample_pdf["label"].astype("int64")
    if int(y.sum()) < p.boosting_min_positives:
        logistic = make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                                 StandardScaler(), LogisticRegression(C=p.logistic_c, max_iter=2000))
        return logistic.fit(x, y)
    model = HistGradientBoostingClassifier(
        max_depth=p.max_depth,
        max_iter=p.max_iter,
        learning_rate=p.learning_rate,
        min_samples_leaf=p.min_samples_leaf,
        l2_regularization=p.l2_regularization,
        early_stopping=False,
        random_state=p.random_state,
    )
    return model.fit(x, y)


def algorithm(model) -> str:
    """Short name of a fitted model from `fit`, for the model table."""
    return "gradient_boosting" if type(model).__name__ == "HistGradientBoostingClassifier" else "logistic_regression"


def hand_rule_score(pdf: pd.DataFrame) -> pd.Series:
    """The analyst's baseline, "heavy data users first": the rank of data_mb_3m, unknown usage lowest."""
    return pdf["data_mb_3m"].rank(method="average", na_option="top")


@dataclass(frozen=True)
class MigrationEvaluation:
    """Out-of-time check: trained on every labelled month before test_month, tested on test_month.

    n_train / n_test are the sampled rows actually used (at most about max_rows each), positives_* the
    upgraders among them. auc_model / auc_rule: ROC AUC on the test month of the model and of the
    hand rule (score = data_mb_3m); None when they cannot be computed, with `note` saying why.
    """

    test_month: date | None
    train_months: tuple[date, ...]
    n_train: int
    n_test: int
    positives_train: int
    positives_test: int
    auc_model: float | None
    auc_rule: float | None
    note: str | None = None


def evaluate_out_of_time(
    labelled: DataFrame, max_rows: int, seed: int, params: MigrationModelParams | Mapping[str, object]
) -> MigrationEvaluation:
    """Train on all labelled months but the latest, test on the latest; compare with the hand rule.

    Both sides are bounded samples (`training_sample`, at most about max_rows rows each). With fewer
    than two labelled months, or a single class in the train or test sample, the AUCs are None and
    `note` says why.
    """
    months = sorted(r["month"] for r in labelled.select("month").distinct().collect())
    if len(months) < 2:
        return evaluate_sample(training_sample(labelled, max_rows, seed), params)
    test_month = months[-1]
    train = training_sample(labelled.where(F.col("month") < F.lit(test_month)), max_rows, seed)
    test = training_sample(labelled.where(F.col("month") == F.lit(test_month)), max_rows, seed)
    return evaluate_sample(pd.concat([train, test], ignore_index=True), params)


def evaluate_sample(sample: pd.DataFrame, params: MigrationModelParams | Mapping[str, object]) -> MigrationEvaluation:
    """`evaluate_out_of_time` on a labelled sample already on the driver (columns as
    `training_sample`): train on its months but the latest, test on the latest."""
    from sklearn.metrics import roc_auc_score

    months = sorted(sample["month"].unique())
    if len(months) < 2:
        return MigrationEvaluation(
            test_month=months[-1] if months else None, train_months=(), n_train=0, n_test=0,
            positives_train=0, positives_test=0, auc_model=None, auc_rule=None,
            note=f"{len(months)} labelled month(s): an out-of-time evaluation needs at least 2 "
                 "(a month is labelled only when the next month's data is present)",
        )
    test_month, train_months = months[-1], tuple(months[:-1])
    train, test = sample[sample["month"] < test_month], sample[sample["month"] == test_month]
    evaluation = MigrationEvaluation(
        test_month=test_month, train_months=train_months, n_train=len(train), n_test=len(test),
        positives_train=int(train["label"].sum()), positives_test=int(test["label"].sum()),
        auc_model=None, auc_rule=None,
    )
    for side, pdf in (("train set", train), (f"test month {test_month}", test)):
        if pdf["label"].nunique() < 2:
            return replace(evaluation, note=(
                f"{side} has a single class ({int(pdf['label'].sum())} upgrades in {len(pdf)} rows): AUC undefined"
            ))
    model = fit(train, params)
    proba = model.predict_proba(test[list(FEATURES)].astype("float64"))[:, 1]
    return replace(
        evaluation,
        auc_model=float(roc_auc_score(test["label"], proba)),
        auc_rule=float(roc_auc_score(test["label"], hand_rule_score(test))),
    )


@dataclass(frozen=True)
class ReasonRule:
    """One feature's reference for reasons, learned from a training sample.

    direction: +1 if higher values go with upgrading, -1 if lower values do, 0 if the Spearman
    correlation with the label is not significant (never used as a reason). threshold: the value
    beyond which a subscriber stands in the top (1 - quantile) share in the upgrade direction, i.e.
    the `quantile` percentile for direction +1 and the (1 - quantile) percentile for -1, in the
    feature's own units. spearman: the rank correlation with the label (NaN if undefined).
    """

    feature: str
    direction: int
    threshold: float
    spearman: float


@dataclass(frozen=True)
class ReasonReference:
    """Per-feature rules, strongest association first, and how many reasons to give at most."""

    rules: tuple[ReasonRule, ...]
    quantile: float
    max_reasons: int


def reason_reference(sample_pdf: pd.DataFrame, quantile: float, min_z: float, max_reasons: int) -> ReasonReference:
    """Learn, per feature, its `quantile` percentile and its direction of association with upgrading.

    The direction is the sign of the Spearman correlation between the feature and the label over the
    rows where the feature is known, kept only when |rho| * sqrt(n - 1) >= min_z (the large-sample
    null distribution of rho has standard deviation 1 / sqrt(n - 1)), so noise does not make reasons.
    Rules are ordered by |rho|, ties in FEATURES order. Deterministic for a given sample.
    """
    rules = []
    label = sample_pdf["label"].astype("float64")
    for feature in FEATURES:
        x = sample_pdf[feature].astype("float64")
        known = x.notna() & label.notna()
        n = int(known.sum())
        rho = math.nan
        if n > 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rho = float(x[known].corr(label[known], method="spearman"))
        significant = not math.isnan(rho) and abs(rho) * math.sqrt(n - 1) >= min_z
        direction = int(np.sign(rho)) if significant else 0
        threshold = float(x[known].quantile(quantile if direction >= 0 else 1 - quantile)) if n else math.nan
        rules.append(ReasonRule(feature, direction, threshold, rho))
    rules.sort(key=lambda r: -abs(r.spearman) if not math.isnan(r.spearman) else 0.0)
    return ReasonReference(tuple(rules), quantile, max_reasons)


def _gb(mb: float) -> str:
    return f"{mb / MB_PER_GB:.1f} GB"


def _describe(feature: str, direction: int, v: float) -> str:
    """Plain words for a feature value that stands out in the upgrade direction."""
    high = direction > 0
    if feature == "gen_rank":
        return f"currently on {GENERATIONS[int(v)]}"
    if feature == "data_mb_3m":
        return f"{'heavy' if high else 'light'} data use: {_gb(v)}/month over 3 months"
    if feature == "data_mb":
        return f"{'high' if high else 'low'} data use this month: {_gb(v)}"
    if feature == "data_growth":
        return f"data use this month at {v:.0%} of its 3-month average"
    if feature == "allowance_use":
        return f"uses {v:.0%} of plan data allowance"
    if feature == "arpu_3m_fen":
        return f"{'high' if high else 'low'} spend: CNY {v / FEN_PER_CNY:.0f}/month over 3 months"
    if feature == "voice_mou":
        return f"{'heavy' if high else 'light'} calling: {v:.0f} voice minutes this month"
    if feature == "age":
        return f"{'older' if high else 'young'} user: aged {v:.0f}"
    if feature == "tenure_months":
        return f"{'long-standing' if high else 'recent'} customer: {v:.0f} months"
    if feature == "is_postpaid":
        return "postpaid plan" if v >= 0.5 else "prepaid plan"
    if feature == "potential_value_index":
        return f"{'high' if high else 'low'} potential value index: {v:.0f}/100"
    return f"{feature} = {v:g}"


def explain(features: pd.DataFrame, reference: ReasonReference) -> pd.Series:
    """Reason text per row of a FEATURES frame: up to max_reasons features beyond their threshold.

    A feature counts when the value is strictly beyond the rule's threshold in its upgrade direction
    (strictly, so that a binary or heavily tied feature never tags the majority); features are taken
    in order of association strength, at most one per REASON_TOPICS topic, and joined with "; ".
    None counts -> NO_REASON.
    """
    chosen: list[list[str]] = [[] for _ in range(len(features))]
    topics: list[set[str]] = [set() for _ in range(len(features))]
    for rule in reference.rules:
        if rule.direction == 0 or math.isnan(rule.threshold):
            continue
        topic = REASON_TOPICS.get(rule.feature, rule.feature)
        x = features[rule.feature].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            hit = x > rule.threshold if rule.direction > 0 else x < rule.threshold
        for i in np.flatnonzero(hit):
            if len(chosen[i]) < reference.max_reasons and topic not in topics[i]:
                chosen[i].append(_describe(rule.feature, rule.direction, float(x[i])))
                topics[i].add(topic)
    return pd.Series(["; ".join(c) if c else NO_REASON for c in chosen], index=features.index, dtype=object)


def _score_batch(pdf: pd.DataFrame, model, reference: ReasonReference, target_gen: str) -> pd.DataFrame:
    x = pdf[list(FEATURES)].astype("float64")
    proba = model.predict_proba(x)[:, 1] if len(x) else np.empty(0)
    return pd.DataFrame({
        "month": pdf["month"],
        "subscriber_id": pdf["subscriber_id"],
        "msisdn_key": pdf["msisdn_key"],
        "network_gen": pdf["network_gen"],
        "target_gen": target_gen,
        "propensity": np.round(proba, PROPENSITY_DECIMALS),
        "data_mb_3m": x["data_mb_3m"],
        "reason": explain(x, reference),
    })


def score_candidates(rows_month: DataFrame, model, target_gen: str, reason_reference: ReasonReference) -> DataFrame:
    """crm.migration_candidates for the months in `rows_month` (subscriber_month rows), scored in Spark
    by one model (`score_months` with the same model for every month)."""
    return score_months(rows_month, {None: (model, reason_reference)}, target_gen)


def score_months(rows: DataFrame, scorers: dict, target_gen: str) -> DataFrame:
    """crm.migration_candidates for the months of `rows` (subscriber_month rows) that `scorers`
    holds, each scored in Spark by its own model: `scorers` maps a month to its fitted model and
    reason reference (the key None: every month of `rows`, by one model).

    Keeps closing rows on a generation below `target_gen`; the models and the reason references
    are broadcast and applied per Arrow batch with mapInPandas, so the base is never collected.
    The months go through one Python stage together (a stage per month cost about 0.7 s each on 2
    cores, whatever its rows). Output: CANDIDATES_SCORED_DDL columns plus priority_rank INT =
    row_number within the month by propensity desc, subscriber_id asc. Lazy: nothing runs until
    the result is written or read.
    """
    if target_gen not in GENERATIONS:
        raise ValueError(f"target_gen {target_gen!r} is not one of {GENERATIONS}")
    below = below_generation(rows, target_gen)
    if None not in scorers:
        below = below.where(F.col("month").isin(sorted(scorers)))
    frame = below.select("month", "subscriber_id", "msisdn_key", "network_gen", *feature_columns())
    scorers_b = rows.sparkSession.sparkContext.broadcast(scorers)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        fitted = scorers_b.value
        for pdf in batches:
            if None in fitted:
                yield _score_batch(pdf, *fitted[None], target_gen)
                continue
            for month, part in pdf.groupby("month", sort=False):
                yield _score_batch(part.reset_index(drop=True), *fitted[month], target_gen)

    order = Window.partitionBy("month").orderBy(F.col("propensity").desc(), F.col("subscriber_id").asc())
    return frame.mapInPandas(score, CANDIDATES_SCORED_DDL).withColumn(
        "priority_rank", F.row_number().over(order).cast("int")
    )
