"""Churn features, labels, watch list and lost customers in Spark (docs/churn.md).

Point in time: the features of month M read only rows dated up to M's last day (subscriber
months up to M, monthly activity and contact summaries up to M, tickets created and resolved by then).
"""

from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from crm_pipeline.columns import literal_array, spark_sql_literal
from crm_pipeline.models.churn import FEATURES
from crm_pipeline.models.migration import gen_rank
from crm_pipeline.transforms.marts.subscriber_month import in_reach

#: subscriber_month columns (of every month at hand) the features and lost customers read.
CHURN_HISTORY_COLUMNS = (
    "subscriber_id", "month", "msisdn_key", "voice_mou", "data_mb", "sms_count", "revenue_fen", "recharge_fen",
    "offnet_voice_mou", "complaint_count", "churned_in_month", "value_segment", "closing", "terminate_reason",
    "tenure_months",
)

ACTIVITY_LOOKBACK_MONTHS = 3
"""Days since the last activity or top-up are measured within M-3..M; a subscriber idle over the whole
window (or since activation, if later) gets the window's length."""

FREQUENT_CONTACT_DAYS = 2
"""A contact is frequent when the subscriber called or texted it on at least this many distinct days of
M-2..M: one chance call is not a calling circle."""


def _month_index(col: Column) -> Column:
    return F.year(col) * 12 + F.month(col)


def _trend(current: Column, prior_mean: Column) -> Column:
    """log(1 + this month) - log(1 + mean of the 3 months before); NULL without a prior month."""
    positive = F.greatest(prior_mean, F.lit(0.0))  # NULL-safe below: greatest skips NULLs
    return F.when(prior_mean.isNotNull(), F.log1p(F.greatest(current, F.lit(0.0))) - F.log1p(positive))


def history_stats(history: DataFrame) -> DataFrame:
    """Per subscriber and month: trailing sums and means over the subscriber's own rows up to M."""
    by_sub = Window.partitionBy("subscriber_id").orderBy(_month_index(F.col("month")))
    prior3, last3 = by_sub.rangeBetween(-3, -1), by_sub.rangeBetween(-2, 0)
    h = history.select(*CHURN_HISTORY_COLUMNS)
    return h.select(
        "subscriber_id", "month",
        F.avg("voice_mou").over(prior3).alias("_mou_prior"),
        F.avg("data_mb").over(prior3).alias("_data_prior"),
        F.avg("sms_count").over(prior3).alias("_sms_prior"),
        F.avg("revenue_fen").over(prior3).alias("_rev_prior"),
        F.sum("offnet_voice_mou").over(prior3).alias("_offnet_prior"),
        F.sum("voice_mou").over(prior3).alias("_voice_prior"),
        F.sum("complaint_count").over(last3).alias("complaints_3m"),
        F.sum("recharge_fen").over(last3).alias("_recharge_3m"),
        F.sum("revenue_fen").over(last3).alias("_revenue_3m"),
    )


def activity_stats(activity: DataFrame, months: DataFrame) -> DataFrame:
    """From gold activity_months: last own activity (MO call, MO SMS or data session) and last top-up
    within M-3..M, the longest gap between top-ups in M-2..M (the open gap to M's end included), the
    top-up days and regulator complaints in M-2..M. `months`: month, month_end."""
    a = activity.select("subscriber_id", F.col("month").alias("_k"), "last_active", "recharge_dates",
                        "regulator_complaints")
    m = F.broadcast(months.select("month", "month_end"))
    j = a.join(m, a._k.between(F.add_months(m.month, -ACTIVITY_LOOKBACK_MONTHS), m.month))
    in3 = F.col("_k") >= F.add_months(F.col("month"), -2)
    per_month = j.groupBy("subscriber_id", "month").agg(
        F.max("last_active").alias("_last_active"),
        F.max(F.array_max("recharge_dates")).alias("_last_recharge"),
        F.sum(F.when(in3, F.col("regulator_complaints")).otherwise(0)).alias("regulator_complaints_3m"),
        # the months' top-up days never overlap: together, in order, they are the days of M-2..M
        F.array_sort(F.flatten(F.collect_list(F.when(in3, F.col("recharge_dates"))))).alias("_days"),
        F.max("month_end").alias("_month_end"),
    )
    days, n = F.col("_days"), F.size("_days")
    gaps = F.zip_with(F.slice(days, 2, n - 1), F.slice(days, 1, n - 1), lambda later, earlier: F.datediff(later, earlier))
    return per_month.select(
        "subscriber_id", "month", "_last_active", "_last_recharge", "regulator_complaints_3m",
        F.when(n > 0, F.greatest(F.array_max(gaps), F.datediff("_month_end", F.array_max(days))))
        .alias("recharge_gap_max_days"),
        F.when(n > 0, n.cast("long")).alias("recharge_days_3m"),
    )


def ticket_stats(tickets: DataFrame, months: DataFrame) -> DataFrame:
    """Mean rating and ratings of 1-2 of tickets created in M-2..M, resolved by M's end, and whose
    rated version was delivered by M's end (silver keeps a ticket's latest version: a rating that
    arrives in a later delivery was not known at M's end and does not count for M)."""
    m = F.broadcast(months.select("month", "month_end"))
    t = tickets.where(F.col("satisfaction").isNotNull() & F.col("resolved_time").isNotNull()).select(
        "subscriber_id", "event_date", "resolved_time", "satisfaction", "business_date")
    j = t.join(m, t.event_date.between(F.add_months(m.month, -2), m.month_end)).where(
        (F.col("resolved_time") < F.date_add("month_end", 1).cast("timestamp_ntz"))
        & (F.col("business_date") <= F.col("month_end")))
    return j.groupBy("subscriber_id", "month").agg(
        F.avg("satisfaction").alias("ticket_satisfaction_3m"),
        F.sum((F.col("satisfaction") <= 2).cast("int")).alias("low_rated_tickets_3m"),
    )


def circle_stats(pairs: DataFrame, history: DataFrame, months: DataFrame, partitions: int | None = None) -> DataFrame:
    """Calling-circle churn exposure: frequent contacts in M-2..M (gold contact_months) and how many of
    them are own-network subscriptions terminated in M-2..M (matched on the keyed number: the pairs'
    `other_party_key` holds the bytes the history's `msisdn_key` spells in hex).

    One pass over the pairs: they are hashed by subscriber once (into `partitions`, by default the
    session's shuffle partitions), so the frequent contacts and the per-subscriber counts that
    follow need no further shuffle of them; the numbers that left are few (a month's churners) and
    are joined to the frequent contacts as a list of churn months per number (a number reassigned
    and terminated again can have two)."""
    m = F.broadcast(months.select(F.col("month").alias("_m")))
    c = pairs.select("subscriber_id", F.col("month").alias("pair_month"), "other_party_key", "days", "first_day")
    j = c.join(m, c.pair_month.between(F.add_months(m._m, -2), m._m)).repartition(
        *([partitions] if partitions else []), "subscriber_id")
    # the months' day counts never overlap, so their sum is the distinct days in M-2..M
    frequent = j.groupBy("subscriber_id", F.col("_m").alias("month"), "other_party_key").agg(
        F.sum("days").alias("days"), F.min("first_day").alias("first_day")).where(
        F.col("days") >= FREQUENT_CONTACT_DAYS)
    churned = history.where(F.col("churned_in_month"))
    left = in_reach(churned, months, 2).groupBy(F.unhex("msisdn_key").alias("other_party_key")).agg(
        F.collect_set("month").alias("churn_months"))
    # first contact by the end of the churn month: a number reassigned later to a new subscription
    # (whose contacts all come after) is not a contact who left
    hit = F.exists("churn_months", lambda churn_month: churn_month.between(F.add_months(F.col("month"), -2),
                                                                           F.col("month"))
                   & (F.col("first_day") <= F.last_day(churn_month)))
    return frequent.join(left, "other_party_key", "left").groupBy("subscriber_id", "month").agg(
        F.count(F.lit(1)).alias("circle_size"), F.count(F.when(hit, 1)).alias("circle_churned"))


def _d(col: str | Column) -> Column:
    return (F.col(col) if isinstance(col, str) else col).cast("double")


def churn_features(rows: DataFrame, history: DataFrame, activity: DataFrame, contacts: DataFrame,
                   tickets: DataFrame, circle_partitions: int | None = None) -> DataFrame:
    """One row per subscriber active at the end of a month of `rows`: month, subscriber_id, FEATURES.

    `rows`: the batch's subscriber_month rows (with the gold extra columns and activation_date);
    `history`: CHURN_HISTORY_COLUMNS of every month at hand up to the batch's last (earlier ones
    included); `activity`: gold activity_months of M-3..M; `contacts`: gold contact_months
    of M-2..M; `tickets`: silver ticket rows created in M-2..M; `circle_partitions`: see
    `circle_stats`. Units and definitions: docs/churn.md.
    """
    months = rows.select("month").distinct().withColumn("month_end", F.last_day("month"))
    base = rows.where(F.col("closing")).join(F.broadcast(months), "month")
    hist = history_stats(in_reach(history, months, 3))  # the months its windows reach, not every one at hand
    act = activity_stats(activity, months)
    tix = ticket_stats(tickets, months)
    circle = circle_stats(contacts, history, months, circle_partitions)
    j = base.join(hist, ["subscriber_id", "month"], "left").join(act, ["subscriber_id", "month"], "left") \
        .join(tix, ["subscriber_id", "month"], "left").join(circle, ["subscriber_id", "month"], "left")
    prepaid = F.col("payment_type") == "PREPAID"
    window_start = F.greatest(F.add_months(F.col("month"), -ACTIVITY_LOOKBACK_MONTHS), F.col("activation_date"))
    idle_since = F.date_sub(window_start, 1)
    voice = _d("voice_mou")
    offnet_share = F.when(voice > 0, _d("offnet_voice_mou") / voice)
    offnet_prior = F.when(_d("_voice_prior") > 0, _d("_offnet_prior") / _d("_voice_prior"))
    segment = F.col("value_segment")
    columns = {
        "voice_mou": voice,
        "data_mb": _d("data_mb"),
        "sms_count": _d("sms_count"),
        "arpu_3m_fen": _d("arpu_3m_fen"),
        "mou_trend": _trend(voice, _d("_mou_prior")),
        "data_trend": _trend(_d("data_mb"), _d("_data_prior")),
        "sms_trend": _trend(_d("sms_count"), _d("_sms_prior")),
        "revenue_trend": _trend(_d("revenue_fen") / 100.0, _d("_rev_prior") / 100.0),
        "offnet_share_change": offnet_share - offnet_prior,
        "days_since_last_activity": _d(F.datediff("month_end", F.coalesce("_last_active", idle_since))),
        "days_since_last_recharge": F.when(prepaid, _d(F.datediff("month_end", F.coalesce("_last_recharge",
                                                                                          idle_since)))),
        "recharge_count_3m": F.when(prepaid, _d(F.coalesce("recharge_days_3m", F.lit(0)))),
        "recharge_gap_max_days": F.when(prepaid, _d(F.coalesce(
            "recharge_gap_max_days", F.datediff("month_end", F.date_sub(
                F.greatest(F.add_months(F.col("month"), -2), F.col("activation_date")), 1))))),
        "recharge_to_spend_3m": F.when(prepaid & (F.col("_revenue_3m") > 0), _d("_recharge_3m") / _d("_revenue_3m")),
        "suspended": _d(F.col("status_at_month_end") == "SUSPENDED"),
        "complaints_3m": _d(F.coalesce("complaints_3m", F.lit(0))),
        "regulator_complaints_3m": _d(F.coalesce("regulator_complaints_3m", F.lit(0))),
        "ticket_satisfaction_3m": _d("ticket_satisfaction_3m"),
        "low_rated_tickets_3m": _d(F.coalesce("low_rated_tickets_3m", F.lit(0))),
        "offnet_share": offnet_share,
        "circle_size": _d(F.coalesce("circle_size", F.lit(0))),
        "circle_churned": _d(F.coalesce("circle_churned", F.lit(0))),
        "circle_churn_share": F.when(F.col("circle_size") > 0, _d(F.coalesce("circle_churned", F.lit(0)))
                                     / _d("circle_size")),
        "tenure_months": _d("tenure_months"),
        "age": _d("age"),
        "is_postpaid": F.when(F.col("payment_type") == "POSTPAID", 1.0).when(prepaid, 0.0),
        "is_group_line": _d(F.col("group_id").isNotNull()),
        "gen_rank": _d(gen_rank(F.col("network_gen"))),
        "allowance_use": F.when(F.col("included_data_mb") > 0, _d("data_mb") / _d("included_data_mb")),
        "arrears_fen": F.when(~prepaid, _d(F.coalesce("arrears_fen", F.lit(0)))),
        "on_time_share": F.when(~prepaid, _d("on_time_share")),
        "current_value_index": _d("current_value_index"),
        "potential_value_index": _d("potential_value_index"),
        "segment_valuable": _d(segment == "VALUABLE"),
        "segment_sub_valuable": _d(segment == "SUB_VALUABLE"),
        "segment_potential": _d(segment == "POTENTIAL"),
    }
    assert tuple(columns) == FEATURES, "feature definitions out of step with FEATURES"
    return j.select("month", "subscriber_id", *[c.alias(n) for n, c in columns.items()])


def label_months(complete_months: list) -> list:
    """The months whose churn labels are known: M+1 and M+2 are both complete months."""
    from crm_pipeline.months import add_months

    complete = set(complete_months)
    return sorted(m for m in complete if add_months(m, 1) in complete and add_months(m, 2) in complete)


def churn_labels(history: DataFrame, complete_months: list) -> DataFrame:
    """Label of each subscriber active at a month's end: 1 when the subscription is terminated in M+1
    or M+2 (churned_in_month in either month), else 0; churn_reason is the terminate_reason then.

    A month is labelled only when M+1 and M+2 are both complete months. Keyed on subscriber_id, so a
    number reassigned to a new subscription after a termination starts a new history; a suspension
    is not a churn. Columns: month, subscriber_id, label INT, churn_reason STRING.
    """
    labelled = label_months(complete_months)
    if not labelled:
        return history.sparkSession.createDataFrame([], "month date, subscriber_id string, label int, "
                                                        "churn_reason string")
    active = history.where(F.col("closing") & F.col("month").isin(labelled)).select("month", "subscriber_id")
    later = history.where(F.col("churned_in_month")).select(
        "subscriber_id", F.col("month").alias("_churn_month"), "terminate_reason")
    ahead = active.join(later, "subscriber_id", "left")
    within = F.col("_churn_month").between(F.add_months("month", 1), F.add_months("month", 2))
    return ahead.groupBy("month", "subscriber_id").agg(
        F.max(within.cast("int")).alias("label"),
        F.max(F.when(within, F.col("terminate_reason"))).alias("churn_reason"),
    ).select("month", "subscriber_id", F.coalesce("label", F.lit(0)).alias("label"), "churn_reason")


def risk_band(score: Column, bands: list[tuple[float, str]]) -> Column:
    """The first band (highest cut first) whose cut the score reaches; NULL for a NULL score."""
    out = F.lit(None).cast("string")
    for cut, name in reversed(bands):
        out = F.when(score >= F.lit(float(cut)), F.lit(name)).otherwise(out)
    return F.when(score.isNotNull(), out)


def control_draw(month: Column, subscriber_id: Column, seed: int) -> Column:
    """A uniform number in [0, 1) from SHA-256 of (seed, month, subscriber_id): the same for a month and
    seed on any cluster and in any run."""
    digest = F.sha2(F.concat_ws("|", F.lit(str(seed)), month.cast("string"), subscriber_id), 256)
    return F.conv(F.substring(digest, 1, 8), 16, 10).cast("double") / float(2 ** 32)


def watchlist_candidates(scored: DataFrame, config: Mapping) -> DataFrame:
    """The watch list before reasons: per month, the subscribers with the highest expected loss.

    `scored`: subscriber_month rows with churn_score (closing subscribers scored by a model). Expected
    loss = churn_score x clv_fen, or x arpu_3m_fen x `revenue_months_without_clv` where CLV is NULL.
    The list holds min(max_rows, ceil(max_share x scored subscribers of the month)) rows with a positive
    expected loss (a line whose margin-based CLV is negative costs nothing to lose), ranked by
    expected loss desc then subscriber_id; `control_group` marks a `control_share` random share.
    """
    w = config
    value = F.coalesce(_d("clv_fen"), _d("arpu_3m_fen") * float(w["revenue_months_without_clv"]))
    scored_rows = scored.where(F.col("closing") & F.col("churn_score").isNotNull())
    per_month = Window.partitionBy("month")
    cap = F.least(F.lit(int(w["max_rows"])), F.ceil(F.count(F.lit(1)).over(per_month) * float(w["max_share"])))
    s = scored_rows.withColumn("_cap", cap).withColumn(
        "expected_loss_fen", F.round(F.col("churn_score") * value, 2)).where(F.col("expected_loss_fen") > 0)
    order = Window.partitionBy("month").orderBy(F.col("expected_loss_fen").desc(), "subscriber_id")
    ranked = s.withColumn("priority_rank", F.row_number().over(order).cast("int"))
    return ranked.where(F.col("priority_rank") <= F.col("_cap")).withColumn(
        "control_group", control_draw(F.col("month"), F.col("subscriber_id"), int(w["control_seed"]))
        < float(w["control_share"]))


def lost_customers(rows: DataFrame, history: DataFrame, weights: Mapping[str, float]) -> DataFrame:
    """Everyone whose subscription was terminated in a month of `rows`, with the profile before leaving.

    tenure_months at the churn month; last_3m_revenue_fen: revenue billed in the churn month and the two
    before; value_segment_before: segment in M-1 (NULL for a line that joined in M);
    offnet_share_before: off-net share of voice minutes over M-2..M; complaints_before: complaints in
    M-2..M; winback_score = weight(terminate_reason) x last_3m_revenue_fen (config) and
    winback_priority = its rank within the month (1 first), NULL where the weight is 0.
    """
    lost = rows.where(F.col("churned_in_month")).select(
        "month", "subscriber_id", "msisdn_key", "terminate_reason", "tenure_months", "payment_type")
    by_sub = Window.partitionBy("subscriber_id").orderBy(_month_index(F.col("month")))
    last3 = by_sub.rangeBetween(-2, 0)
    # the leavers' months only (a window sees one subscriber's months, so theirs come out the same):
    # the windows then sort a few percent of the history instead of every subscriber's months
    leavers = history.select(*CHURN_HISTORY_COLUMNS).join(lost.select("subscriber_id"), "subscriber_id", "left_semi")
    h = leavers.select(
        "subscriber_id", "month",
        F.sum("revenue_fen").over(last3).alias("last_3m_revenue_fen"),
        F.sum("offnet_voice_mou").over(last3).alias("_offnet"),
        F.sum("voice_mou").over(last3).alias("_voice"),
        F.sum("complaint_count").over(last3).alias("complaints_before"),
        F.lag("value_segment").over(by_sub).alias("_prev_segment"),
        F.lag("month").over(by_sub).alias("_prev_month"),
    )
    j = lost.join(h, ["subscriber_id", "month"], "left")
    weight = F.lit(None).cast("double")
    for reason, wt in weights.items():
        weight = F.when(F.col("terminate_reason") == reason, F.lit(float(wt))).otherwise(weight)
    score = F.coalesce(weight, F.lit(0.0)) * F.col("last_3m_revenue_fen").cast("double")
    out = j.select(
        "month", "subscriber_id", "msisdn_key", "terminate_reason", "tenure_months", "payment_type",
        F.col("last_3m_revenue_fen").cast("long").alias("last_3m_revenue_fen"),
        F.when(F.col("_prev_month") == F.add_months("month", -1), F.col("_prev_segment")).alias("value_segment_before"),
        F.when(F.col("_voice") > 0, F.round(F.col("_offnet") / F.col("_voice"), 6)).alias("offnet_share_before"),
        F.col("complaints_before").cast("long").alias("complaints_before"),
        F.round(score, 2).alias("winback_score"),
    )
    order = Window.partitionBy("month").orderBy(F.col("winback_score").desc(), "subscriber_id")
    ranked = out.where(F.col("winback_score") > 0).withColumn(
        "winback_priority", F.row_number().over(order).cast("int"))
    return ranked.unionByName(out.where(~(F.col("winback_score") > 0)).withColumn(
        "winback_priority", F.lit(None).cast("int")))


def feature_bins(features: DataFrame, edges: Mapping[str, list[float]], group: str = "month") -> DataFrame:
    """Rows per (month, feature, bin) for drift: the bin of each value on the reference `edges`
    (bin = number of edges below the value; missing values in bin len(edges) + 1, as
    models.churn.bin_index). Output: month, feature, bin INT, n LONG."""
    def index(name: str) -> str:  # as SQL: one call into the JVM for all features and edges
        col = f"CAST(`{name}` AS DOUBLE)"
        below = " + ".join(f"CAST({col} > {spark_sql_literal(float(e))} AS INT)" for e in edges[name]) or "0"
        return f"CASE WHEN {col} IS NULL OR isnan({col}) THEN {len(edges[name]) + 1} ELSE {below} END"

    names = list(edges)
    # a feature's position and its bin, both ints, stacked and grouped; its name after the grouping
    bins = F.expr(f"array({', '.join(index(n) for n in names)})")
    stacked = features.select(group, F.posexplode(bins).alias("_f", "bin"))
    counts = stacked.groupBy(group, "_f", "bin").agg(F.count(F.lit(1)).alias("n"))
    return counts.select(group, literal_array(names)[F.col("_f")].alias("feature"), "bin", "n")
