"""Churn model pieces: EMP, PSI, labels at month edges, no leakage, reasons, the honest-scoring rule,
scoring inside Spark, the watch list's control group and the registry."""

from __future__ import annotations

import json
import math
import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from crm_pipeline.models.churn import (
    FEATURES,
    ChurnParams,
    EmpParams,
    bin_index,
    emp_churn,
    fit_models,
    psi,
    reference_bins,
    top_decile_lift,
    top_reasons,
)

PARAMS = ChurnParams(
    gradient_boosting={"max_iter": 200, "learning_rate": 0.1, "max_depth": 3, "min_samples_leaf": 20,
                       "l2_regularization": 1.0, "folds": 5, "n_iter_no_change": 20,
                       "random_state": 0},
    logistic_c=1.0, min_positives=5,
)


# --- EMP -----------------------------------------------------------------------------------------

def test_emp_of_a_perfect_classifier_by_hand():
    # pi0 = 0.5, gamma ~ U(0, 1), delta = 10/100, phi = 0: target exactly the churners for any gamma > 0,
    # profit 100 * 0.9 gamma * 0.5, integrated over [0, 1]: 45 / 2 = 22.5
    assert emp_churn([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.2], EmpParams(100, 10, 0, 1, 1)) == pytest.approx(22.5)


def test_emp_of_an_imperfect_classifier_by_hand():
    # Ranking churner, non-churner, churner, non-churner. ROC hull (0,0) (0,.5) (.5,1) (1,1).
    # gamma in [0, 1/9]: target the top one only, profit 22.5 gamma -> 22.5 / 2 / 81 = 0.138889
    # gamma in [1/9, 1]: target the top three, profit 45 gamma - 2.5 -> 22.5 (1 - 1/81) - 2.5 * 8/9 = 20
    got = emp_churn([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.2], EmpParams(100, 10, 0, 1, 1))
    assert got == pytest.approx(20.0 + 22.5 / 2 / 81)


def test_emp_equals_brute_force_integration_over_every_threshold():
    from scipy import integrate
    from scipy.stats import beta

    rng = np.random.default_rng(5)
    y = (rng.random(300) < 0.2).astype(int)
    score = np.round(y * 0.8 + rng.random(300), 2)  # ties included
    p = EmpParams(200, 10, 1, 6, 14)
    pi0 = y.mean()
    order = np.unique(score)[::-1]
    f0 = np.array([0.0] + [((score >= t) & (y == 1)).sum() / y.sum() for t in order])
    f1 = np.array([0.0] + [((score >= t) & (y == 0)).sum() / (1 - y).sum() for t in order])
    delta, phi = p.d / p.clv, p.f / p.clv

    def best(g):
        return (p.clv * ((g * (1 - delta) - phi) * pi0 * f0 - (delta + phi) * (1 - pi0) * f1)).max()

    want, _ = integrate.quad(lambda g: best(g) * beta.pdf(g, p.alpha, p.beta), 0, 1, limit=500)
    assert emp_churn(y, score, p) == pytest.approx(want, rel=1e-6)


def test_top_decile_lift_counts_the_top_tenth():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1] * 2)  # base rate 0.2
    score = np.array([0.9, 0.8] + [0.1] * 18)  # top 2 of 20: one churner
    assert top_decile_lift(y, score) == pytest.approx(0.5 / 0.2)


# --- PSI -----------------------------------------------------------------------------------------

def test_psi_by_hand():
    # (0.25 - 0.5) ln(0.5) + (0.75 - 0.5) ln(1.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0


def test_reference_bins_put_missing_values_in_their_own_bin():
    ref = reference_bins(pd.Series([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10, None, None]), 10)
    assert len(ref["shares"]) == len(ref["edges"]) + 2
    assert ref["shares"][-1] == pytest.approx(2 / 12)
    assert sum(ref["shares"]) == pytest.approx(1.0)
    # a value equal to an edge falls in the bin that edge closes: (-inf, e1], (e1, e2] ...
    assert bin_index(np.array([ref["edges"][0], ref["edges"][0] + 1e-9, np.nan]), ref["edges"]).tolist() == \
        [0, 1, len(ref["edges"]) + 1]


def test_feature_bins_in_spark_match_the_reference_binning(spark):
    from crm_pipeline.transforms.marts.churn import feature_bins

    rng = np.random.default_rng(1)
    values = np.round(rng.normal(size=200), 1)
    values[::17] = np.nan
    edges = reference_bins(pd.Series(values[:100]), 10)["edges"]
    df = spark.createDataFrame([(date(2026, 1, 1), None if np.isnan(v) else float(v)) for v in values],
                               "month date, x double")
    got = {r.bin: r.n for r in feature_bins(df, {"x": edges}).collect()}
    want = pd.Series(bin_index(values, edges)).value_counts().to_dict()
    assert got == want


# --- Labels at month edges -----------------------------------------------------------------------

def _snapshot(day, sid, msisdn, status="ACTIVE", status_date=date(2025, 6, 1), reason=None,
              activation=date(2025, 6, 1)):
    return (day, sid, msisdn, "C" + sid, "A" + sid, None, "025", "GOTONE", "P1", "PREPAID", "4G", 1990,
            status, status_date, reason, activation)


SNAPSHOT_DDL = ("snapshot_date date, subscriber_id string, msisdn string, customer_id string, account_id string, "
                "group_id string, city_code string, brand string, plan_id string, payment_type string, "
                "network_gen string, birth_year int, status string, status_date date, terminate_reason string, "
                "activation_date date")
MONTH_ENDS = [date(2025, 12, 31), date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]


def _label_rows(spark):
    from crm_pipeline.transforms.marts.churn import churn_labels
    from crm_pipeline.transforms.marts.subscriber_month import month_frame, subscriber_month_base

    def life(sid, msisdn, terminated=None, reason=None, activation=date(2025, 6, 1), suspended=None):
        rows = []
        for d in MONTH_ENDS:
            if d < activation:
                continue
            if terminated and d >= terminated:
                rows.append(_snapshot(d, sid, msisdn, "TERMINATED", terminated, reason, activation))
            elif suspended and suspended[0] <= d < suspended[1]:
                rows.append(_snapshot(d, sid, msisdn, "SUSPENDED", suspended[0], None, activation))
            else:
                rows.append(_snapshot(d, sid, msisdn, activation=activation))
        return rows

    snaps = (life("first", "13900000001", date(2026, 2, 1), "PORT_OUT")         # terminated on M+1's 1st
             + life("lastday", "13900000002", date(2026, 1, 31), "VOLUNTARY")  # terminated on M's last day
             + life("m2end", "13900000003", date(2026, 3, 31), "NON_PAYMENT")  # terminated on M+2's last day
             + life("m3", "13900000004", date(2026, 4, 1), "VOLUNTARY")        # terminated in M+3
             + life("old", "13900000005", date(2026, 2, 10), "PORT_OUT")       # its number is reassigned ...
             + life("new", "13900000005", activation=date(2026, 2, 20))        # ... to a new subscription
             + life("paused", "13900000006", suspended=(date(2026, 1, 31), date(2026, 3, 1))))  # suspended, back
    df = spark.createDataFrame(snaps, SNAPSHOT_DDL)
    months = [date(2026, m, 1) for m in (1, 2, 3, 4)]
    base = subscriber_month_base(df, month_frame(spark, months, set(MONTH_ENDS)))
    labels = churn_labels(base.select("subscriber_id", "month", "closing", "churned_in_month", "terminate_reason"),
                          months)
    return {(r.subscriber_id, r.month.month): (r.label, r.churn_reason) for r in labels.collect()}


def test_labels_at_month_edges(spark):
    got = _label_rows(spark)
    assert got[("first", 1)] == (1, "PORT_OUT")        # terminated on the 1st of M+1
    assert ("lastday", 1) not in got                   # terminated on M's last day: not active at M's end
    assert got[("m2end", 1)] == (1, "NON_PAYMENT")     # terminated on the last day of M+2
    assert got[("m2end", 2)] == (1, "NON_PAYMENT")
    assert got[("m3", 1)] == (0, None)                 # M+3 is outside the horizon
    assert got[("m3", 2)] == (1, "VOLUNTARY")
    assert got[("old", 1)] == (1, "PORT_OUT")          # the reassigned number does not undo the churn
    assert got[("new", 2)] == (0, None)                # nor does the new holder inherit it
    assert got[("paused", 1)] == (0, None)             # a suspension is not a churn
    assert {m for (_, m) in got} == {1, 2}             # March and April lack M+2: not labelled yet


# --- No leakage ----------------------------------------------------------------------------------

HISTORY_DDL = ("subscriber_id string, month date, msisdn_key string, voice_mou double, data_mb double, "
               "sms_count long, revenue_fen long, recharge_fen long, offnet_voice_mou double, complaint_count long, "
               "churned_in_month boolean, value_segment string, closing boolean, terminate_reason string, "
               "tenure_months int")


def _leakage_inputs(spark, seed: int, future_seed: int):
    """Subscriber months Nov..Apr and daily data Oct..May for 12 subscribers; everything dated after
    February's end drawn from `future_seed`, the rest from `seed`."""
    from crm_pipeline.transforms.intermediate.daily_rollups import contact_months

    subs = [f"s{i:02d}" for i in range(12)]
    cut = date(2026, 2, 28)

    def rng_for(d):
        return np.random.default_rng([future_seed if d > cut else seed, d.toordinal()])

    months = [date(2025, 11, 1), date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1),
              date(2026, 4, 1)]
    hist, daily, contacts, tickets = [], [], [], []
    for m in months:
        r = rng_for(m)
        for i, s in enumerate(subs):
            hist.append((s, m, f"{i:02x}", float(r.integers(0, 500)), float(r.integers(0, 5000)),
                         int(r.integers(0, 50)), int(r.integers(0, 9000)), int(r.integers(0, 9000)),
                         float(r.integers(0, 100)), int(r.integers(0, 3)), bool(r.random() < 0.15),
                         str(r.choice(["VALUABLE", "LOW_VALUE"])), True, None, 12))
    day = date(2025, 10, 1)
    while day <= date(2026, 5, 31):
        r = rng_for(day)
        for i, s in enumerate(subs):
            if r.random() < 0.5:
                daily.append((s, day, int(r.integers(0, 2)) * 60, int(r.integers(0, 2)), int(r.integers(0, 2)),
                              int(r.random() < 0.1), int(r.random() < 0.05)))
            if r.random() < 0.3:
                contacts.append((s, day, bytes([int(r.integers(0, 12))]), "ON_NET", int(r.integers(0, 3))))
            if r.random() < 0.05:
                resolved = (pd.Timestamp(day) + pd.Timedelta(days=int(r.integers(0, 10)), hours=9)).to_pydatetime()
                # delivered with its rating on the day of resolution, or (one in three) days later
                delivered = resolved.date() + timedelta(days=int(r.integers(1, 40)) if r.random() < 0.33 else 0)
                # a rating resolved or delivered after February's end is future data: the future seed's
                late = resolved.date() > cut or delivered > cut
                rate = np.random.default_rng([future_seed, day.toordinal(), i]) if late else r
                tickets.append((s, day, resolved, int(rate.integers(1, 6)), delivered))
        day += timedelta(days=1)
    h = spark.createDataFrame(hist, HISTORY_DDL)
    d = spark.createDataFrame(daily, "subscriber_id string, usage_date date, voice_mo_sec long, sms_mo_count long, "
                                     "data_sessions long, recharge_count long, regulator_complaints long")
    c = contact_months(spark.createDataFrame(
        contacts, "subscriber_id string, usage_date date, other_party_key binary, other_operator string, calls long"))
    t = spark.createDataFrame(tickets, "subscriber_id string, event_date date, resolved_time timestamp_ntz, "
                                       "satisfaction int, business_date date")
    return h, d, c, t


def _february_rows(history):
    """February's subscriber_month rows: the history columns plus the month-end attributes."""
    from pyspark.sql import functions as F

    return history.where(F.col("month") == F.lit(date(2026, 2, 1))).select(
        "*", F.lit("PREPAID").alias("payment_type"), F.lit(None).cast("string").alias("group_id"),
        F.lit("4G").alias("network_gen"), F.lit(30.0).alias("age"), F.lit(1024).alias("included_data_mb"),
        F.lit(0.0).alias("arrears_fen"), F.lit(None).cast("double").alias("on_time_share"),
        F.lit(50.0).alias("current_value_index"), F.lit(40.0).alias("potential_value_index"),
        F.lit(3000.0).alias("arpu_3m_fen"), F.lit("ACTIVE").alias("status_at_month_end"),
        F.lit(date(2025, 1, 1)).alias("activation_date"))


def _feb_features(spark, future_seed):
    from crm_pipeline.transforms.intermediate.daily_rollups import activity_months
    from crm_pipeline.transforms.marts.churn import churn_features

    h, d, c, t = _leakage_inputs(spark, seed=3, future_seed=future_seed)
    out = churn_features(_february_rows(h), h, activity_months(d), c, t).toPandas()
    return out.sort_values("subscriber_id").reset_index(drop=True)


def test_no_feature_of_a_month_changes_with_data_after_its_end(spark):
    base = _feb_features(spark, future_seed=100)
    other = _feb_features(spark, future_seed=200)
    assert len(base) == 12 and list(base.columns) == ["month", "subscriber_id", *FEATURES]
    pd.testing.assert_frame_equal(base, other)
    # the inputs did differ after February, and February's own data is read
    h1, h2 = (_leakage_inputs(spark, 3, s)[0].toPandas() for s in (100, 200))
    assert not h1.equals(h2)
    assert base["ticket_satisfaction_3m"].notna().any() and base["circle_churned"].sum() > 0
    assert base["circle_size"].sum() > 0 and base["days_since_last_activity"].notna().all()


def test_history_features_read_only_the_months_their_windows_reach(spark):
    """Months before M-3 change no feature of M, and are not read: a semi join on M-3..M below the
    history windows (gold keeps 13 months before a batch; the windows reach 3)."""
    from pyspark.sql import functions as F

    from crm_pipeline.transforms.intermediate.daily_rollups import activity_months
    from crm_pipeline.transforms.marts.churn import churn_features
    from tests.unit.plans import below, plan_lines

    h, d, c, t = _leakage_inputs(spark, seed=3, future_seed=100)
    november = h.where(F.col("month") == F.lit(date(2025, 11, 1)))
    older = november.withColumn("month", F.lit(date(2025, 8, 1))).withColumn("voice_mou", F.lit(1e6)) \
        .withColumn("revenue_fen", F.lit(10**9))
    features = churn_features(_february_rows(h), h.unionByName(older), activity_months(d), c, t)
    got = features.toPandas().sort_values("subscriber_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, _feb_features(spark, future_seed=100))
    assert below(features, "Window [avg(voice_mou", "Join LeftSemi"), "\n".join(plan_lines(features))


def test_changing_data_inside_the_month_changes_its_features(spark):
    from pyspark.sql import functions as F

    from crm_pipeline.transforms.intermediate.daily_rollups import activity_months
    from crm_pipeline.transforms.marts.churn import churn_features

    h, d, c, t = _leakage_inputs(spark, seed=3, future_seed=100)
    rows = _february_rows(h)
    before = churn_features(rows, h, activity_months(d), c, t).toPandas()
    quiet = d.where(F.col("usage_date") < F.lit(date(2026, 2, 15)))  # no activity after Feb 14
    after = churn_features(rows, h, activity_months(quiet), c, t).toPandas()
    assert (after["days_since_last_activity"].to_numpy() >= 14).all()
    assert not before["days_since_last_activity"].equals(after["days_since_last_activity"])


def _activity_from_days(daily, months):
    """The activity features straight from the daily rows (how they were computed before the monthly
    summaries): the reference the summaries must reproduce."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    d = daily.select(
        "subscriber_id", "usage_date",
        ((F.col("voice_mo_sec") > 0) | (F.col("sms_mo_count") > 0) | (F.col("data_sessions") > 0)).alias("active"),
        (F.col("recharge_count") > 0).alias("recharged"), "regulator_complaints",
    )
    j = d.join(months, d.usage_date.between(F.add_months(months.month, -3), months.month_end))
    in3 = F.col("usage_date") >= F.add_months(F.col("month"), -2)
    by_day = Window.partitionBy("subscriber_id", "month").orderBy("usage_date")
    gaps = j.where(F.col("recharged") & in3).select(
        "subscriber_id", "month", "month_end",
        F.datediff("usage_date", F.lag("usage_date").over(by_day)).alias("gap"), "usage_date",
    ).groupBy("subscriber_id", "month").agg(
        F.greatest(F.max("gap"), F.datediff(F.max("month_end"), F.max("usage_date"))).alias("recharge_gap_max_days"),
        F.count(F.lit(1)).alias("recharge_days_3m"),
    )
    last = j.groupBy("subscriber_id", "month").agg(
        F.max(F.when(F.col("active"), F.col("usage_date"))).alias("_last_active"),
        F.max(F.when(F.col("recharged"), F.col("usage_date"))).alias("_last_recharge"),
        F.sum(F.when(in3, F.col("regulator_complaints")).otherwise(0)).alias("regulator_complaints_3m"),
    )
    return last.join(gaps, ["subscriber_id", "month"], "left")


def test_activity_from_monthly_summaries_equals_activity_from_days(spark):
    """Top-up gaps across month boundaries, a subscriber idle for months, months with one top-up day:
    the features from gold activity_months equal those computed from every daily row."""
    from pyspark.sql import functions as F

    from crm_pipeline.transforms.intermediate.daily_rollups import activity_months
    from crm_pipeline.transforms.marts.churn import activity_stats

    _, d, _, _ = _leakage_inputs(spark, seed=5, future_seed=6)
    rng = np.random.default_rng(9)
    sparse = [("x1", date(2025, 12, 30), 0, 0, 0, 1, 0), ("x1", date(2026, 2, 2), 60, 0, 0, 1, 1),
              ("x2", date(2025, 11, 3), 0, 1, 0, 0, 0)]  # one top-up each side of January; idle since November
    sparse += [("x3", date(2025, 10, 1) + timedelta(days=int(k)), 0, 0, 1, int(rng.random() < 0.3), 0)
               for k in rng.choice(240, size=40, replace=False)]
    d = d.unionByName(spark.createDataFrame(sparse, d.schema))
    months = spark.createDataFrame([(date(2026, m, 1),) for m in (1, 2, 3, 4)], "month date").withColumn(
        "month_end", F.last_day("month"))
    columns = ["subscriber_id", "month", "_last_active", "_last_recharge", "regulator_complaints_3m",
               "recharge_gap_max_days", "recharge_days_3m"]
    want = _activity_from_days(d, months).select(*columns).toPandas()
    got = activity_stats(activity_months(d), months).select(*columns).toPandas()
    order = ["subscriber_id", "month"]
    want, got = (x.sort_values(order).reset_index(drop=True) for x in (want, got))
    # x2, idle since November, has no row for March and April (as before the summaries)
    assert len(want) == 12 * 4 + 4 + 2 + 4 and want["recharge_gap_max_days"].notna().sum() > 30
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    x1 = got[(got.subscriber_id == "x1") & (got.month == date(2026, 2, 1))].iloc[0]
    assert x1.recharge_gap_max_days == 34 and x1.recharge_days_3m == 2  # Dec 30 -> Feb 2, Feb 2 -> Feb 28 is 26


def test_calling_circle_counts_frequent_contacts_and_those_that_left_by_hand(spark):
    """Frequent over M-2..M (days summed across months), a number that left twice in the window
    (reassigned) counted once, a number that left before the contact began (reassigned later) or
    outside the window not counted; two batch months at once."""
    from pyspark.sql import functions as F

    from crm_pipeline.transforms.marts.churn import circle_stats

    def d(m, day=1):
        return date(2026, m, day)

    pA, pB, pC, pD = (bytes([n]) for n in range(10, 14))  # the pairs hold the bytes msisdn_key spells
    pairs = spark.createDataFrame([
        ("S1", d(3), pA, 1, d(3, 10)), ("S1", d(5), pA, 1, d(5, 2)),  # 2 days over 03..05, 1 over 04..06
        ("S1", d(5), pB, 3, d(5, 20)), ("S1", d(6), pC, 2, d(6, 1)),
        ("S2", d(4), pB, 2, d(4, 3)), ("S2", d(6), pD, 2, d(6, 5)),
        ("S3", d(6), pA, 1, d(6, 9)),  # never frequent: no row
    ], "subscriber_id string, month date, other_party_key binary, days long, first_day date")
    history = spark.createDataFrame([
        ("0a", d(4), True), ("0a", d(5), False),  # left in April; the number's new holder stays
        ("0b", d(5), True), ("0b", d(6), True),  # left in May, reassigned, left again in June
        ("0c", d(5), True),  # left in May, before S1 first called the number (June 1)
        ("0d", d(1), True),  # left in January: outside every window
    ], "msisdn_key string, month date, churned_in_month boolean")
    months = spark.createDataFrame([(d(5),), (d(6),)], "month date").withColumn("month_end", F.last_day("month"))
    got = {(r.subscriber_id, r.month): (r.circle_size, r.circle_churned)
           for r in circle_stats(pairs, history, months).collect()}
    assert got == {("S1", d(5)): (2, 2), ("S1", d(6)): (2, 1), ("S2", d(5)): (1, 1), ("S2", d(6)): (2, 1)}
    # hashed into a given number of partitions (sized by the caller from the pairs' bytes): the same counts
    five = circle_stats(pairs, history, months, partitions=5)
    assert re.search(r"hashpartitioning\(subscriber_id#\d+, 5\)", five._jdf.queryExecution().executedPlan().toString())
    assert {(r.subscriber_id, r.month): (r.circle_size, r.circle_churned) for r in five.collect()} == got


def test_lost_customers_profile_each_leaver_from_their_own_months_by_hand(spark):
    """Revenue, off-net share and complaints over M-2..M, the segment of M-1 only when that month
    exists, the win-back score and rank; the windows read the leavers' months only."""
    from pyspark.sql import functions as F

    from crm_pipeline.transforms.marts.churn import CHURN_HISTORY_COLUMNS, lost_customers
    from tests.unit.plans import below, plan_lines

    def d(m):
        return date(2026, m, 1)

    def h(sub, m, revenue, voice, offnet, complaints, segment, churned=False, reason=None, tenure=12):
        values = dict(subscriber_id=sub, month=d(m), msisdn_key=f"k{sub}", voice_mou=voice, data_mb=0.0,
                      sms_count=0, revenue_fen=revenue, recharge_fen=0, offnet_voice_mou=offnet,
                      complaint_count=complaints, churned_in_month=churned, value_segment=segment,
                      closing=not churned, terminate_reason=reason, tenure_months=tenure)
        return tuple(values[c] for c in CHURN_HISTORY_COLUMNS)

    schema = ("subscriber_id string, month date, msisdn_key string, voice_mou double, data_mb double, "
              "sms_count long, revenue_fen long, recharge_fen long, offnet_voice_mou double, complaint_count long, "
              "churned_in_month boolean, value_segment string, closing boolean, terminate_reason string, "
              "tenure_months int")
    history = spark.createDataFrame([
        h("S1", 2, 9_000, 10.0, 1.0, 5, "VALUABLE"),  # before M-2: outside every sum
        h("S1", 3, 1_000, 10.0, 2.0, 1, "VALUABLE"), h("S1", 4, 2_000, 20.0, 3.0, 0, "SUB_VALUABLE"),
        h("S1", 5, 3_000, 10.0, 5.0, 1, "POTENTIAL", True, "VOLUNTARY"),
        h("S2", 4, 500, 0.0, 0.0, 0, "LOW_VALUE"), h("S2", 5, 700, 0.0, 0.0, 2, "LOW_VALUE", True, "PORT_OUT", 3),
        h("S3", 3, 4_000, 5.0, 5.0, 0, "VALUABLE"),  # no April row: no segment before
        h("S3", 5, 1_000, 5.0, 0.0, 0, "VALUABLE", True, "NON_PAYMENT", 26),
        h("S4", 4, 8_000, 1.0, 1.0, 0, "VALUABLE"), h("S4", 5, 8_000, 1.0, 1.0, 0, "VALUABLE"),  # stays
    ], schema)
    rows = history.where(F.col("month") == d(5)).withColumn("payment_type", F.lit("PREPAID"))
    weights = {"VOLUNTARY": 1.0, "PORT_OUT": 2.0, "NON_PAYMENT": 0.0}
    lost = lost_customers(rows, history, weights)
    got = {r.subscriber_id: (r.last_3m_revenue_fen, r.value_segment_before, r.offnet_share_before,
                             r.complaints_before, r.winback_score, r.winback_priority) for r in lost.collect()}
    assert got == {
        "S1": (6_000, "SUB_VALUABLE", 0.25, 2, 6_000.0, 1),
        "S2": (1_200, "LOW_VALUE", None, 2, 2_400.0, 2),  # no voice: no share
        "S3": (5_000, None, 0.5, 0, 0.0, None),  # weight 0: no priority
    }
    # the windows' input is the leavers' months: a semi join with them below the windows
    assert below(lost, "Window [sum(revenue_fen", "Join LeftSemi"), "\n".join(plan_lines(lost))


# --- Model, reasons ------------------------------------------------------------------------------

def _synthetic(n: int, driver: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=list(FEATURES))
    x[driver] = rng.poisson(0.5, size=n).astype(float)
    logit = -3.0 + 1.8 * x[driver] + 0.1 * x["tenure_months"]
    x["label"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    x["subscriber_id"] = [f"S{i}" for i in range(n)]
    return x


def test_reasons_point_at_the_driver():
    data = _synthetic(4000, "complaints_3m")
    models = fit_models(data, data["label"], PARAMS)
    row = data.iloc[[0]].copy()
    row[list(FEATURES)] = 0.0
    row["complaints_3m"] = 4.0
    for algo, model in models.items():
        reasons = json.loads(top_reasons(model, row, 3)[0])
        assert reasons[0]["feature"] == "complaints_3m", (algo, reasons)
        assert reasons[0]["reason"] == "4 complaints in 3 months"
        assert reasons[0]["impact"] > 0


def test_every_feature_has_plain_words_for_any_value():
    from crm_pipeline.models.churn import describe

    for feature in FEATURES:
        for v in (0.0, 1.0, -3.0, 1e9, float("nan")):
            text = describe(feature, v)
            assert isinstance(text, str) and text and "=" not in text, (feature, v, text)


def test_fit_copes_with_a_feature_missing_in_every_training_row():
    data = _synthetic(1000, "complaints_3m")
    data["mou_trend"] = np.nan  # e.g. the lake's first month: no earlier month to compare with
    models = fit_models(data, data["label"], PARAMS)
    later = data.head(20).assign(mou_trend=1.5)
    for model in models.values():
        assert np.isfinite(model.predict_proba(later[list(FEATURES)])[:, 1]).all()


def test_fit_refuses_too_few_churners():
    data = _synthetic(300, "complaints_3m")
    data["label"] = 0
    data.loc[:2, "label"] = 1
    with pytest.raises(ValueError, match="3 churners"):
        fit_models(data, data["label"], PARAMS)
    data.loc[:9, "label"] = 1
    data.loc[:9, "subscriber_id"] = ["S0", "S1", "S2", "S3"] * 2 + ["S0", "S1"]  # 10 churner rows, 4 subscribers
    with pytest.raises(ValueError, match=r"10 churners \(4 subscribers\)"):
        fit_models(data, data["label"], PARAMS)


def test_boosting_learns_a_non_monotone_effect_the_logistic_baseline_cannot():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    data = pd.DataFrame(rng.normal(size=(6000, len(FEATURES))), columns=list(FEATURES))
    hot = data["revenue_trend"].abs() > 1.2  # a sharp rise or a sharp fall: no linear effect
    data["label"] = (rng.random(6000) < np.where(hot, 0.2, 0.02)).astype(int)
    data["subscriber_id"] = [f"S{i}" for i in range(6000)]
    train, test = data.iloc[:4000], data.iloc[4000:]
    models = fit_models(train, train["label"], PARAMS)
    auc = {a: roc_auc_score(test["label"], m.predict_proba(test[list(FEATURES)])[:, 1]) for a, m in models.items()}
    assert auc["gradient_boosting"] > 0.7 and auc["logistic_regression"] < 0.6


def test_boosting_stops_on_unseen_subscribers_not_on_their_other_months():
    """Labels are noise, constant per subscriber over its six monthly rows. Holding out random rows
    lets a model that memorises subscribers look better and better (it never stops); holding out
    whole subscribers shows there is nothing to learn, and the members stop early."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from crm_pipeline.models.churn import SubscriberFoldBoosting

    rng = np.random.default_rng(5)
    subs, months = 400, 6
    x = pd.DataFrame(np.repeat(rng.normal(size=(subs, len(FEATURES))), months, axis=0), columns=list(FEATURES))
    x += rng.normal(scale=0.01, size=x.shape)
    y = pd.Series(np.repeat((rng.random(subs) < 0.2).astype(int), months))
    ids = pd.Series(np.repeat([f"S{i}" for i in range(subs)], months))
    params = {"max_iter": 300, "learning_rate": 0.1, "max_depth": 3, "min_samples_leaf": 5, "l2_regularization": 0.0,
              "folds": 5, "n_iter_no_change": 10, "random_state": 0}
    by_subscriber = SubscriberFoldBoosting(params).fit(x, y, ids)
    by_row = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, max_depth=3, min_samples_leaf=5,
                                            early_stopping=True, validation_fraction=0.2, n_iter_no_change=10,
                                            scoring="loss", random_state=0).fit(x, y)
    assert len(by_subscriber.n_iter_) == 5
    assert max(by_subscriber.n_iter_) < 60 < by_row.n_iter_
    p = by_subscriber.predict_proba(x)
    assert p.shape == (len(x), 2) and np.allclose(p.sum(axis=1), 1.0)


def test_the_training_folds_pick_the_boosting_settings():
    """Churn needs two features together (an interaction): stumps cannot see it, depth-3 trees can.
    The out-of-fold log-loss on held-out subscribers, not a test month, makes the choice."""
    from crm_pipeline.models.churn import boosting_candidates, fit_boosting

    settings = {"max_iter": 200, "learning_rate": 0.1, "min_samples_leaf": 20, "l2_regularization": 0.0,
                "folds": 3, "n_iter_no_change": 10, "random_state": 0,
                "search": {"max_depth": [1, 3], "max_features": [1.0]}}
    assert [c["max_depth"] for c in boosting_candidates(settings)] == [1, 3]
    assert len(boosting_candidates({**settings, "search": {"max_depth": [2, 3], "max_features": [0.5, 1.0]}})) == 4
    rng = np.random.default_rng(4)
    x = pd.DataFrame(rng.normal(size=(3000, len(FEATURES))), columns=list(FEATURES))
    both = (x["complaints_3m"] > 0.5) & (x["mou_trend"] < -0.5)
    y = pd.Series((rng.random(3000) < np.where(both, 0.5, 0.03)).astype(int))
    ids = pd.Series([f"S{i}" for i in range(3000)])
    chosen = fit_boosting(x, y, ids, settings)
    stumps = fit_boosting(x, y, ids, {**settings, "search": {"max_depth": [1], "max_features": [1.0]}})
    assert chosen.params["max_depth"] == 3
    assert chosen.oof_log_loss < stumps.oof_log_loss


def test_settings_name_a_missing_boosting_setting():
    import copy

    from crm_pipeline.pipeline.settings import churn_settings
    from crm_pipeline.settings import load_analytics_config

    raw = copy.deepcopy(load_analytics_config()["churn"])
    churn_settings(copy.deepcopy(raw))
    del raw["gradient_boosting"]["search"]["max_depth"]
    with pytest.raises(ValueError, match="max_depth"):
        churn_settings(raw)


# --- Honest scoring ------------------------------------------------------------------------------

def _card(end: date, test: date, trained_at: str = "2026-01-01T00:00:00", spec: str = "s", version=None):
    from crm_pipeline.models.registry import ModelCard

    return ModelCard(version=version or f"v{end:%Y%m}", name="churn", trained_at=trained_at, spec=spec,
                     algorithm="gradient_boosting", baseline_algorithm="logistic_regression", train_months=[],
                     test_month=test.isoformat(), labels_known_through=end.isoformat(), n_train=1, n_test=1,
                     positives_train=1, positives_test=1, feature_list=list(FEATURES), metrics={}, calibration={},
                     lift={}, drift_reference={}, data_version={}, params={}, config_version="t")


def test_a_model_never_scores_a_month_before_its_labels_end():
    from crm_pipeline.months import add_months
    from crm_pipeline.pipeline.churn import scoring_plan, training_windows

    complete = [date(2025, m, 1) for m in range(1, 13)]
    labelled = [m for m in complete if add_months(m, 2) <= complete[-1]]
    windows = training_windows(labelled, complete, {"min_train_months": 2, "max_train_months": 12})
    # a window trains only on labels whose outcome months end before its test month begins
    assert windows and all(add_months(test, 2) == end and add_months(max(train), 2) <= test
                           for end, train, test in windows)
    cards = [_card(end, test) for end, _, test in windows] + [_card(date(2025, 6, 1), date(2025, 4, 1), spec="old")]
    plan = scoring_plan(cards, complete, "s")
    for month, card in plan.items():
        assert card.spec == "s"
        assert date.fromisoformat(card.labels_known_through) <= month
        assert add_months(date.fromisoformat(card.test_month), 2) <= month
    # the first window: trained on Jan-Feb (labels through April), tested on April, whose labels need
    # May and June: it scores June on
    assert min(plan) == date(2025, 6, 1) and plan[date(2025, 6, 1)].test_month == "2025-04-01"
    assert all(m not in plan for m in complete if m < date(2025, 6, 1))
    assert plan[date(2025, 12, 1)].labels_known_through == "2025-12-01"  # the newest honest model


def test_months_to_rescore_are_those_whose_newest_honest_model_is_not_the_recorded_one(tmp_path, monkeypatch):
    """Read from gold subscriber_month through delta-rs, a file at a time (several files per month),
    without Spark: a month with NULL scores and a model now is rescored, one scored by its newest
    honest model is not, one scored by an older model is."""
    import pyarrow as pa
    from deltalake import write_deltalake

    from crm_pipeline.pipeline import churn
    from crm_pipeline.settings import LakeLayout

    lake = LakeLayout(str(tmp_path / "lake"))
    months = [date(2026, m, 1) for m in (5, 6, 7, 8)]
    assert churn.months_to_rescore(lake, months, {}) == months  # no gold yet: every month
    cards = [_card(date(2026, 6, 1), date(2026, 4, 1), version="v6"),
             _card(date(2026, 8, 1), date(2026, 6, 1), version="v8")]
    monkeypatch.setattr(churn.Registry, "cards", lambda self: cards)
    monkeypatch.setattr(churn, "spec_hash", lambda config: "s")
    recorded = {date(2026, 5, 1): None, date(2026, 6, 1): None, date(2026, 7, 1): "v6", date(2026, 8, 1): "v6"}
    schema = pa.schema([("subscriber_id", pa.string()), ("month", pa.date32()), ("churn_model_version", pa.string())])
    for part in range(2):  # two commits: two files per month
        write_deltalake(lake.gold("subscriber_month"), pa.table({
            "subscriber_id": [f"S{part}{i}" for i in range(4)], "month": list(recorded),
            "churn_model_version": [None if v is None or part else v for v in recorded.values()]},
            schema=schema), mode="append", partition_by=["month"])
    # June: NULL, its honest model v6 now exists; July: v6 is its newest; August: v8 is newer than v6
    assert churn.months_to_rescore(lake, months, {}) == [date(2026, 6, 1), date(2026, 8, 1)]
    assert churn.recorded_models(lake.gold("subscriber_month"), months) == {date(2026, 7, 1): "v6",
                                                                             date(2026, 8, 1): "v6"}


# --- Scoring inside Spark ------------------------------------------------------------------------

def test_scoring_runs_in_spark_without_collecting_the_base(spark):
    from pyspark.sql import functions as F

    from crm_pipeline.models.churn import score_in_spark

    data = _synthetic(2000, "complaints_3m")
    model = fit_models(data, data["label"], PARAMS)["gradient_boosting"]
    base = spark.range(5000).select(
        F.lit(date(2026, 3, 1)).alias("month"), F.col("id").cast("string").alias("subscriber_id"),
        *[(F.rand(seed=i) * 2 - 1).alias(f) for i, f in enumerate(FEATURES)])
    scored = score_in_spark(base, {"v1": model}, {date(2026, 3, 1): "v1"})
    plan = scored._jdf.queryExecution().executedPlan().toString()
    assert "MapInPandas" in plan and "Range" in plan  # scored from the source, in Python workers
    assert "LocalTableScan" not in plan and "Collect" not in plan
    out = scored.agg(F.count("*").alias("n"), F.min("churn_score").alias("lo"), F.max("churn_score").alias("hi"),
                     F.countDistinct("churn_model_version").alias("v")).collect()[0]
    assert out.n == 5000 and 0 <= out.lo <= out.hi <= 1 and out.v == 1
    # the same rows scored on the driver give the same probabilities
    sample = base.limit(50).toPandas()
    want = np.round(model.predict_proba(sample[list(FEATURES)])[:, 1], 6)
    got = score_in_spark(spark.createDataFrame(sample), {"v1": model}, {date(2026, 3, 1): "v1"}).toPandas()
    np.testing.assert_allclose(got.set_index("subscriber_id").loc[sample["subscriber_id"], "churn_score"], want)


def test_model_drift_bins_each_scored_month_against_its_models_training_sample_by_hand(spark):
    """PSI per feature and of the score, a missing value in a bin of its own; `scores` may be the
    scored subscriber months (other columns, other subscribers), only the features' rows count."""
    from types import SimpleNamespace

    from crm_pipeline.pipeline.churn import model_drift

    may = date(2026, 5, 1)
    features = spark.createDataFrame([(may, "s1", 5.0), (may, "s2", 20.0), (may, "s3", 30.0), (may, "s4", None)],
                                     "month date, subscriber_id string, voice_mou double")
    scored = spark.createDataFrame([(may, "s1", 0.2, "A"), (may, "s2", 0.7, "B"), (may, "s3", 0.9, "C"),
                                    (may, "s9", 0.99, "D")],  # s4 unscored; s9 has no features
                                   "month date, subscriber_id string, churn_score double, value_segment string")
    reference = {"voice_mou": {"edges": [10.0], "shares": [0.5, 0.5, 0.0]},
                 "churn_score": {"edges": [0.5], "shares": [0.75, 0.25, 0.0]}}
    card = SimpleNamespace(version="v1", drift_reference=reference, n_train=100)
    got = [tuple(r) for r in model_drift(features, scored, {may: card}, 0.2).orderBy("feature").collect()]
    score_psi = round(psi([0.75, 0.25, 0.0], [0.25, 0.5, 0.25]), 6)  # 0.2 | 0.7, 0.9 | s4: none
    voice_psi = round(psi([0.5, 0.5, 0.0], [0.25, 0.5, 0.25]), 6)  # 5 | 20, 30 | s4: NULL
    assert got == [(may, "v1", "churn_score", score_psi, 0.2, score_psi > 0.2, 100, 4),
                   (may, "v1", "voice_mou", voice_psi, 0.2, voice_psi > 0.2, 100, 4)]


# --- Watch list ----------------------------------------------------------------------------------

WATCH = {"max_rows": 50, "max_share": 0.5, "control_share": 0.2, "control_seed": 7, "revenue_months_without_clv": 12}


def _scored(spark, n=400):
    rng = np.random.default_rng(4)
    rows = [(date(2026, 5, 1), f"s{i:04d}", True, float(np.round(rng.random(), 6)),
             None if i % 10 == 0 else int(rng.integers(1000, 500000)), float(rng.integers(500, 20000)))
            for i in range(n)]
    return spark.createDataFrame(rows, "month date, subscriber_id string, closing boolean, churn_score double, "
                                       "clv_fen long, arpu_3m_fen double")


def test_watchlist_ranks_by_expected_loss_within_capacity(spark):
    from crm_pipeline.transforms.marts.churn import watchlist_candidates

    got = watchlist_candidates(_scored(spark), WATCH).toPandas().sort_values("priority_rank")
    assert len(got) == 50  # min(50 rows, 50 % of 400)
    assert got["expected_loss_fen"].is_monotonic_decreasing
    row = got.iloc[0]
    value = row.clv_fen if not pd.isna(row.clv_fen) else row.arpu_3m_fen * 12
    assert row.expected_loss_fen == pytest.approx(round(row.churn_score * value, 2))
    small = watchlist_candidates(_scored(spark, 40), WATCH).count()
    assert small == 20  # 50 % of 40


def test_control_group_is_reproducible_for_a_month_and_seed(spark):
    from crm_pipeline.transforms.marts.churn import watchlist_candidates

    wide = {**WATCH, "max_rows": 400, "max_share": 1.0}
    a = watchlist_candidates(_scored(spark), wide).select("subscriber_id", "control_group").toPandas()
    b = watchlist_candidates(_scored(spark), wide).select("subscriber_id", "control_group").toPandas()
    c = watchlist_candidates(_scored(spark), {**wide, "control_seed": 8}).select(
        "subscriber_id", "control_group").toPandas()
    key = "subscriber_id"
    assert a.sort_values(key).reset_index(drop=True).equals(b.sort_values(key).reset_index(drop=True))
    assert not a.sort_values(key)["control_group"].reset_index(drop=True).equals(
        c.sort_values(key)["control_group"].reset_index(drop=True))
    assert 0.12 < a["control_group"].mean() < 0.28  # 20 % of 400, binomial sd 2 points


# --- Registry ------------------------------------------------------------------------------------

def test_registry_round_trip(tmp_path):
    from crm_pipeline.models.registry import Registry

    reg = Registry(str(tmp_path / "lake"), "churn")
    assert reg.cards() == []
    data = _synthetic(1000, "complaints_3m")
    models = fit_models(data, data["label"], PARAMS)
    card = _card(date(2026, 5, 1), date(2026, 3, 1), version="abc")
    reg.register(card, models)
    reg.register(card, models)  # an existing version is kept, not duplicated
    assert [c.version for c in reg.cards()] == ["abc"] and reg.cards()[0] == card
    loaded = reg.load("abc")
    x = data[list(FEATURES)].head(5)
    np.testing.assert_array_equal(loaded["gradient_boosting"].predict_proba(x),
                                  models["gradient_boosting"].predict_proba(x))
    assert [p.name for p in (tmp_path / "lake" / "models" / "churn").iterdir()] == ["abc"]
    # a version being written has no card yet: readers do not see it
    (tmp_path / "lake" / "models" / "churn" / "half").mkdir()
    (tmp_path / "lake" / "models" / "churn" / "half" / "model.joblib").write_bytes(b"partial")
    assert [c.version for c in reg.cards()] == ["abc"] and not reg.has("half")


# --- Gold model tables ---------------------------------------------------------------------------

class _Cards:
    """A registry of model cards (`write_model_tables` reads only `cards()`)."""

    def __init__(self, cards):
        self._cards = cards

    def cards(self):
        return self._cards


def _scored_card(version: str, auc: float, spec: str = "s"):
    from dataclasses import replace

    metrics = {"auc": auc, "top_decile_lift": 3.0, "emp": 1.0, "brier": 0.04, "base_rate": 0.05}
    calibration = [{"bin": 1, "n": 10, "mean_score": 0.1, "observed_rate": 0.1}]
    lift = [{"decile": 1, "targeted_share": 0.1, "churners_captured_share": 0.4, "cumulative_lift": 4.0,
             "churn_rate": 0.2}]
    algos = ("gradient_boosting", "logistic_regression")
    return replace(_card(date(2026, 6, 1), date(2026, 4, 1), spec=spec, version=version),
                   metrics={a: metrics for a in algos}, calibration={a: calibration for a in algos},
                   lift={a: lift for a in algos})


def test_model_tables_are_checked_and_rewritten_only_when_their_content_changes(spark, tmp_path, monkeypatch):
    from deltalake import DeltaTable

    from crm_pipeline.pipeline.churn import MODEL_TABLES, model_tables_current, write_model_tables
    from crm_pipeline.quality import gx
    from crm_pipeline.quality.gx import DataQualityError
    from crm_pipeline.settings import LakeLayout

    lake = LakeLayout(str(tmp_path / "lake"))

    def versions():
        return {t: DeltaTable(lake.gold(t)).version() for t in MODEL_TABLES}

    def checked(rows):
        return {r["table_name"] for r in rows}

    assert not model_tables_current(lake, [_scored_card("m1", 0.8)], "s")  # no table yet
    first = write_model_tables(spark, lake, _Cards([_scored_card("m1", 0.8)]), "s", "run-1")
    assert checked(first) == {f"gold_{t}" for t in MODEL_TABLES} and all(r["success"] for r in first)
    written = versions()
    # a few rows each: committed through delta-rs, and read by Spark as its own
    assert {DeltaTable(lake.gold(t)).history(1)[0]["engineInfo"].split(":")[0] for t in MODEL_TABLES} == {"delta-rs"}
    assert [r[0] for r in spark.read.format("delta").load(lake.gold("churn_model")).select("model_version").collect()
            ] == ["m1"]
    # what `crm train` reads, without Spark, to know it has nothing to write
    assert model_tables_current(lake, [_scored_card("m1", 0.8)], "s")
    assert not model_tables_current(lake, [_scored_card("m1", 0.8)], "t")  # in_use flips
    assert not model_tables_current(lake, [_scored_card("m1", 0.81)], "s")

    # a later commit that records no suite (maintenance, a property set by an operator) is looked past
    spark.sql(f"ALTER TABLE delta.`{lake.gold('churn_model')}` SET TBLPROPERTIES ('crm.note' = 'maintained')")
    assert versions()["churn_model"] > written["churn_model"]
    written = versions()
    assert write_model_tables(spark, lake, _Cards([_scored_card("m1", 0.8)]), "s", "run-2") == []
    assert versions() == written  # unchanged and checked by the same suites: neither checked nor rewritten

    # a suite that changed since (a new pipeline version) checks the unchanged table again and records
    # that it did (the same content in a new version), so the next train need not check it
    real = gx.load_suite_definition
    lift = real("gold_churn_model_lift")
    stricter = dict(lift, expectations=[*lift["expectations"], {
        "type": "expect_column_values_to_not_be_null", "kwargs": {"column": "cumulative_lift"},
        "meta": {"severity": "blocking"}}])
    monkeypatch.setattr(gx, "load_suite_definition", lambda t: stricter if t == "gold_churn_model_lift" else real(t))
    assert checked(write_model_tables(spark, lake, _Cards([_scored_card("m1", 0.8)]), "s", "run-2b")) \
        == {"gold_churn_model_lift"}
    assert versions() == dict(written, churn_model_lift=written["churn_model_lift"] + 1)
    assert write_model_tables(spark, lake, _Cards([_scored_card("m1", 0.8)]), "s", "run-2c") == []
    monkeypatch.setattr(gx, "load_suite_definition", real)
    # back to the old suite: checked and recorded again
    assert checked(write_model_tables(spark, lake, _Cards([_scored_card("m1", 0.8)]), "s", "run-2d")) \
        == {"gold_churn_model_lift"}
    written = versions()

    # another current spec flips in_use: only churn_model changes
    assert checked(write_model_tables(spark, lake, _Cards([_scored_card("m1", 0.8)]), "t", "run-3")) \
        == {"gold_churn_model"}
    assert versions() == dict(written, churn_model=written["churn_model"] + 1)

    # a blocking failure (an AUC above 1) raises before anything is written
    before = versions()
    with pytest.raises(DataQualityError, match=r"gold_churn_model: expect_column_values_to_be_between\(auc\)"):
        write_model_tables(spark, lake, _Cards([_scored_card("m1", 1.5)]), "t", "run-4")
    assert versions() == before
