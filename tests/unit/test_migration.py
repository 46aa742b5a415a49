"""5G migration candidates: upgrade labels, out-of-time evaluation, Spark-side scoring, reasons."""

from __future__ import annotations

import contextlib
import io
from datetime import date

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame

from crm_pipeline.models.migration import (
    CANDIDATES_SCORED_DDL,
    FEATURES,
    NO_REASON,
    MigrationModelParams,
    evaluate_out_of_time,
    explain,
    fit,
    reason_reference,
    score_candidates,
    score_months,
    training_sample,
    upgrade_labels,
)

pytestmark = pytest.mark.spark

JAN, FEB, MAR = date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)
PARAMS = MigrationModelParams(
    max_depth=3, max_iter=100, learning_rate=0.05, min_samples_leaf=100, l2_regularization=1.0, random_state=0
)
MAX_ROWS, SEED = 100_000, 11
ROWS_DDL = (
    "month date, subscriber_id string, msisdn_key string, payment_type string, network_gen string, "
    "tenure_months int, revenue_fen long, arpu_3m_fen double, voice_mou double, sms_count long, "
    "data_mb double, data_mb_3m double, recharge_fen long, complaint_count long, age int, "
    "included_data_mb long, current_value_index double, potential_value_index double, "
    "closing boolean, churned_in_month boolean"
)
GENS = ("2G", "3G", "4G", "5G")


# ---------------------------------------------------------------- labels on a hand-made frame

@pytest.fixture(scope="module")
def labels(spark):
    def row(month, sid, gen, closing=True):
        return (month, sid, gen, closing)

    rows = [
        row(JAN, "UP45", "4G"), row(FEB, "UP45", "5G"),
        row(JAN, "STAY", "4G"), row(FEB, "STAY", "4G"),
        row(JAN, "ON5G", "5G"), row(FEB, "ON5G", "5G"),
        row(JAN, "UP34", "3G"), row(FEB, "UP34", "4G"),
        row(JAN, "GONE", "4G", closing=False), row(FEB, "GONE", "5G", closing=False),
        row(JAN, "GAP", "4G"), row(MAR, "GAP", "5G"),
    ]
    frame = upgrade_labels(spark.createDataFrame(rows, "month date, subscriber_id string, network_gen string, closing boolean"))
    return {(r.subscriber_id, r.month): r.label for r in frame.collect()}


def test_a_4g_line_on_5g_next_month_is_labelled_an_upgrade(labels):
    assert labels[("UP45", JAN)] == 1


def test_a_line_on_the_same_generation_next_month_is_labelled_no_upgrade(labels):
    assert labels[("STAY", JAN)] == 0


def test_a_3g_line_on_4g_next_month_is_labelled_an_upgrade(labels):
    assert labels[("UP34", JAN)] == 1


def test_a_line_already_on_the_newest_generation_gets_no_label(labels):
    assert not [k for k in labels if k[0] == "ON5G"]


def test_the_last_month_without_a_next_month_gets_no_label(labels):
    assert not [k for k in labels if k[1] == FEB]


def test_a_line_not_active_at_month_end_gets_no_label(labels):
    assert ("GONE", JAN) not in labels


def test_the_next_month_means_the_next_calendar_month_not_the_next_row(labels):
    assert ("GAP", JAN) not in labels


# ---------------------------------------------------------------- a synthetic operator

def synthetic_rows(n_subscribers: int, months: list[date], seed: int) -> pd.DataFrame:
    """Subscriber-months where the chance of moving up a generation rises with data use and youth.

    log-odds of an upgrade = -2 + 1.2 * z(log data_mb_3m) - 0.05 * (age - 40); other columns are noise.
    """
    rng = np.random.default_rng(seed)
    n = n_subscribers
    ids = np.array([f"S{i:06d}" for i in range(n)])
    age = rng.integers(18, 76, n)
    base_mb = rng.lognormal(np.log(3000.0), 1.0, n)
    gen = rng.choice(4, n, p=[0.05, 0.15, 0.6, 0.2])
    postpaid = rng.random(n) < 0.4
    allowance = rng.choice([1024, 5120, 10240, 20480, -1], n).astype(float)
    allowance[allowance < 0] = np.nan
    tenure = rng.integers(1, 120, n)
    arpu = rng.gamma(4.0, 1500.0, n)
    history: list[np.ndarray] = []
    frames = []
    for t, month in enumerate(months):
        data_mb = base_mb * rng.lognormal(0.0, 0.3, n)
        history.append(data_mb)
        data_3m = np.mean(history[-3:], axis=0)
        closing = rng.random(n) > 0.03
        frames.append(pd.DataFrame({
            "month": month, "subscriber_id": ids, "msisdn_key": np.char.add("k", ids),
            "payment_type": np.where(postpaid, "POSTPAID", "PREPAID"),
            "network_gen": np.array(GENS)[gen], "tenure_months": (tenure + t).astype("int32"),
            "revenue_fen": rng.poisson(arpu).astype("int64"), "arpu_3m_fen": arpu,
            "voice_mou": rng.gamma(2.0, 100.0, n), "sms_count": rng.poisson(20, n).astype("int64"),
            "data_mb": data_mb, "data_mb_3m": data_3m, "recharge_fen": rng.poisson(3000, n).astype("int64"),
            "complaint_count": rng.poisson(0.05, n).astype("int64"),
            "age": pd.Series(age, dtype="Int32").mask(rng.random(n) < 0.05),
            "included_data_mb": pd.array(allowance, dtype="Int64"),
            "current_value_index": rng.uniform(0, 100, n), "potential_value_index": rng.uniform(0, 100, n),
            "closing": closing, "churned_in_month": ~closing,
        }))
        z = (np.log(data_3m) - np.log(3000.0)) / 1.0
        p_up = 1.0 / (1.0 + np.exp(-(-2.0 + 1.2 * z - 0.05 * (age - 40))))
        gen = np.where((gen < 3) & (rng.random(n) < p_up), gen + 1, gen)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def synthetic(spark):
    pdf = synthetic_rows(3000, [JAN, FEB, MAR], seed=20260101)
    return pdf, spark.createDataFrame(pdf, ROWS_DDL)


@pytest.fixture(scope="module")
def labelled(synthetic):
    return upgrade_labels(synthetic[1]).cache()


@pytest.fixture(scope="module")
def evaluation(labelled):
    return evaluate_out_of_time(labelled, MAX_ROWS, SEED, PARAMS)


@pytest.fixture(scope="module")
def sample(labelled):
    return training_sample(labelled, MAX_ROWS, SEED)


@pytest.fixture(scope="module")
def model(sample):
    return fit(sample, PARAMS)


@pytest.fixture(scope="module")
def reference(sample):
    return reason_reference(sample, quantile=0.8, min_z=1.96, max_reasons=2)


def test_evaluation_tests_on_the_latest_labelled_month_and_trains_on_the_earlier_ones(evaluation):
    assert (evaluation.test_month, evaluation.train_months) == (FEB, (JAN,))
    assert evaluation.note is None
    assert 0 < evaluation.positives_test < evaluation.n_test
    assert evaluation.n_train + evaluation.n_test > 4000


def test_the_model_ranks_upgraders_well_above_chance_out_of_time(evaluation):
    assert evaluation.auc_model > 0.7


def test_the_model_beats_heavy_data_users_when_youth_also_drives_upgrades(evaluation):
    assert 0.55 < evaluation.auc_rule < evaluation.auc_model


def test_with_a_single_labelled_month_the_evaluation_says_why_it_cannot_evaluate(synthetic):
    rows = synthetic[1].where("month < date'2026-03-01'")
    result = evaluate_out_of_time(upgrade_labels(rows), MAX_ROWS, SEED, PARAMS)
    assert (result.auc_model, result.auc_rule) == (None, None)
    assert "at least 2" in result.note


def test_too_few_upgraders_for_trees_switch_to_a_regularised_logistic_regression(sample):
    from dataclasses import replace

    from crm_pipeline.models.migration import algorithm

    upgraders = int(sample["label"].sum())
    assert algorithm(fit(sample, replace(PARAMS, boosting_min_positives=upgraders))) == "gradient_boosting"
    logistic = fit(sample, replace(PARAMS, boosting_min_positives=upgraders + 1))
    assert algorithm(logistic) == "logistic_regression"
    proba = logistic.predict_proba(sample[list(FEATURES)].astype("float64"))[:, 1]
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(sample["label"], proba) > 0.7  # the same monotone signal, learned linearly


def test_training_sample_is_bounded_deterministic_and_sorted(labelled):
    a = training_sample(labelled, 500, SEED)
    b = training_sample(labelled, 500, SEED)
    pd.testing.assert_frame_equal(a, b)
    assert 300 < len(a) < 700
    assert list(a.columns) == ["month", "subscriber_id", *FEATURES, "label"]
    assert a[["month", "subscriber_id"]].apply(tuple, axis=1).is_monotonic_increasing


# ---------------------------------------------------------------- scoring inside Spark

@pytest.fixture(scope="module")
def march(synthetic):
    return synthetic[1].where("month = date'2026-03-01'")


@pytest.fixture(scope="module")
def scored(march, model, reference, monkeypatch_module):
    def refuse(*_a, **_k):
        raise AssertionError("score_candidates must not bring the base to the driver")

    for name in ("collect", "toPandas", "toLocalIterator", "take"):
        monkeypatch_module.setattr(DataFrame, name, refuse)
    frame = score_candidates(march, model, "5G", reference)
    monkeypatch_module.undo()
    return frame


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def scored_rows(scored):
    return scored.toPandas()


def test_scoring_never_collects_the_base_and_runs_the_model_in_map_in_pandas(scored):
    plan = io.StringIO()
    with contextlib.redirect_stdout(plan):
        scored.explain()
    assert "MapInPandas" in plan.getvalue()


def test_scoring_output_has_the_contract_schema(scored):
    expected = [f.split(" ")[0] for f in CANDIDATES_SCORED_DDL.split(", ")] + ["priority_rank"]
    assert scored.columns == expected
    assert dict(scored.dtypes)["priority_rank"] == "int"
    assert dict(scored.dtypes)["propensity"] == "double"


def test_only_active_lines_below_the_newest_generation_are_scored(synthetic, scored_rows):
    pdf = synthetic[0]
    expected = pdf[(pdf.month == MAR) & pdf.closing & (pdf.network_gen != "5G")]
    assert sorted(scored_rows.subscriber_id) == sorted(expected.subscriber_id)
    assert set(scored_rows.network_gen) <= {"2G", "3G", "4G"}
    assert set(scored_rows.target_gen) == {"5G"}


def test_propensities_are_probabilities_and_ranks_run_from_one_by_propensity(scored_rows):
    assert scored_rows.propensity.between(0.0, 1.0).all()
    ordered = scored_rows.sort_values("priority_rank")
    assert ordered.priority_rank.tolist() == list(range(1, len(ordered) + 1))
    assert ordered.propensity.is_monotonic_decreasing


def test_rescoring_gives_bit_identical_propensities(march, model, reference, scored_rows):
    again = score_candidates(march, model, "5G", reference).toPandas()
    key = ["subscriber_id"]
    a, b = scored_rows.sort_values(key).reset_index(drop=True), again.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_months_scored_in_one_pass_each_by_its_own_model(synthetic, model, reference, scored_rows):
    from sklearn.dummy import DummyClassifier

    x = pd.DataFrame(0.0, index=range(4), columns=list(FEATURES))
    constant = DummyClassifier(strategy="prior").fit(x, [0, 0, 0, 1])  # every row: 0.25
    got = score_months(synthetic[1], {MAR: (model, reference), FEB: (constant, reference)}, "5G").toPandas()
    assert sorted(set(got.month)) == [FEB, MAR]  # January, in the rows but without a model: not scored
    key = ["subscriber_id"]
    march = got[got.month == MAR].drop(columns="month").sort_values(key).reset_index(drop=True)
    alone = scored_rows.drop(columns="month").sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(march, alone)  # March as scored by its model alone, ranks included
    february = got[got.month == FEB]
    pdf = synthetic[0]
    assert len(february) == ((pdf.month == FEB) & pdf.closing & (pdf.network_gen != "5G")).sum() > 0
    assert (february.propensity == 0.25).all()
    assert sorted(february.priority_rank) == list(range(1, len(february) + 1))


# ---------------------------------------------------------------- reasons

def profile(sample: pd.DataFrame, **overrides: float) -> pd.DataFrame:
    row = sample[list(FEATURES)].median().to_dict()
    row.update(overrides)
    return pd.DataFrame([row])


def test_the_reference_learns_that_data_use_raises_and_age_lowers_the_chance_of_upgrading(reference):
    direction = {r.feature: r.direction for r in reference.rules}
    assert (direction["data_mb_3m"], direction["age"]) == (1, -1)


def test_a_very_heavy_data_user_is_told_so_in_plain_units(sample, reference):
    reason = explain(profile(sample, data_mb_3m=20480.0, data_mb=20480.0), reference).iloc[0]
    assert "data use" in reason and "20.0 GB" in reason
    assert reason.count(";") <= 1


def test_a_reason_does_not_repeat_the_same_driver_in_other_words(sample, reference):
    reason = explain(profile(sample, data_mb_3m=20480.0, data_mb=20480.0), reference).iloc[0]
    assert reason.count("GB") == 1


def test_an_average_subscriber_gets_the_combined_usage_profile_reason(sample, reference):
    assert explain(profile(sample), reference).iloc[0] == NO_REASON


def test_scored_reasons_mention_data_use_for_the_heaviest_users(scored_rows):
    heaviest = scored_rows.nlargest(20, "data_mb_3m")
    assert heaviest.reason.str.contains("data use").all()
