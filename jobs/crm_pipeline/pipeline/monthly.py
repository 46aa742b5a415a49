"""Monthly analytics: which months are complete, and gold subscriber_month / kpi_month for them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date, timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline import faults, ops
from crm_pipeline.columns import isin
from crm_pipeline.errors import PipelineError
from crm_pipeline.feeds import load_feeds
from crm_pipeline.io import delta, delta_rs
from crm_pipeline.months import add_months, month_days
from crm_pipeline.pipeline.rollups import month_summaries
from crm_pipeline.pipeline.tables import silver
from crm_pipeline.progress import bar, track
from crm_pipeline.quality import gx
from crm_pipeline.settings import LakeLayout
from crm_pipeline.stages import stage
from crm_pipeline.transforms.marts.subscriber_month import (
    month_frame,
    monthly_revenue,
    monthly_usage,
    subscriber_month,
    subscriber_month_base,
    HISTORY_COLUMNS,
    with_trailing_windows,
)
from crm_pipeline.pipeline.settings import AnalyticsSettings, analytics_settings  # noqa: F401  (re-exported)

LATE_DAYS = 3


def next_month(m: date) -> date:
    return add_months(m, 1)


def month_readiness(loaded_days: dict[str, set[date]], bill_months: set[date],
                    through: date | None = None) -> dict[date, list[str]]:
    """Per month from the first loaded day to the last one (or to `through`, if later): what it still
    waits for, empty once complete. A month is complete when its bill has landed and every daily
    feed has every day of the month and the first LATE_DAYS days of the next (late CDRs)."""
    daily = [s.feed for s in load_feeds().values() if s.is_daily]
    all_days = set().union(*[loaded_days.get(f, set()) for f in daily]) if daily else set()
    if not all_days:
        return {}
    out: dict[date, list[str]] = {}
    m = min(all_days).replace(day=1)
    last = max(all_days) if through is None else max(through, max(all_days))
    while m <= last:
        needed = month_days(m) + [next_month(m) + timedelta(days=i) for i in range(LATE_DAYS)]
        waits = [] if m in bill_months else ["bill not delivered"]
        gaps: dict[str, list[str]] = {}  # days not loaded -> the feeds missing them
        for feed in daily:
            missing = sorted(set(needed) - loaded_days.get(feed, set()))
            if missing:
                gaps.setdefault(_spans(missing), []).append(feed)
        for span, feeds in gaps.items():
            waits.append(f"{span} not loaded ({'every daily feed' if len(feeds) == len(daily) else ', '.join(feeds)})")
        out[m] = waits
        m = next_month(m)
    return out


def _spans(days: list[date]) -> str:
    """Sorted days as runs: 2026-03-04..2026-03-06, 2026-03-09 (at most three runs, then a count)."""
    runs: list[list[date]] = []
    for d in days:
        if runs and d == runs[-1][-1] + timedelta(days=1):
            runs[-1].append(d)
        else:
            runs.append([d])
    text = [f"{r[0]}..{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs[:3]]
    return ", ".join(text) + (f" and {len(runs) - 3} more spans" if len(runs) > 3 else "")


def loaded_days(lake: LakeLayout) -> dict[str, set[date]]:
    out: dict[str, set[date]] = {}
    for (feed, day) in ops.loaded_deliveries(lake):
        out.setdefault(feed, set()).add(day)
    return out


def bill_months(lake: LakeLayout) -> set[date]:
    """Months whose bill has landed: the partitions of silver bill, read from its Delta log alone
    (no Spark, no data file)."""
    return delta_rs.partition_values(lake.silver("bill"), load_feeds()["bill"].partition_column) or set()


def lake_readiness(lake: LakeLayout, through: date | None = None) -> dict[date, list[str]]:
    """`month_readiness` of what the lake holds (delivery log and silver bill; no Spark)."""
    return month_readiness(loaded_days(lake), bill_months(lake), through)


def require_complete(months: list[date], readiness: dict[date, list[str]]) -> None:
    """PipelineError naming what each incomplete month of `months` waits for: a month asked for by
    name (a scheduled run's) must not pass silently."""
    unready = sorted(m for m in set(months) if readiness.get(m) != [])
    if unready:
        raise PipelineError("; ".join(f"{m:%Y-%m} is not complete: {'; '.join(readiness.get(m) or ['nothing loaded'])}"
                                      for m in unready)
                            + ". Nothing was built; run again once it is (`crm status` shows what is late)")


#: Gold subscriber_month columns: the published ones, plus what later months and marts read back.
GOLD_EXTRAS = (
    "account_id", "birth_year", "age", "recharge_count", "voice_sec", "data_bytes", "revenue_prior_fen",
    "data_mb_prior", "data_mb_3m", "rows_3m", "recharge_months_3m", "included_data_mb", "voice_contacts",
    "on_net_contacts", "bills_due", "bills_on_time", "on_time_share", "arrears_fen", "terminate_reason",
)


#: What the marts read of earlier months (all stored in gold subscriber_month).
HISTORY_COLUMNS_ALL = [
    "subscriber_id", "month", "msisdn_key", "group_id", "payment_type", "network_gen", "value_segment",
    "tenure_months", "opening", "closing", "gross_add", "churned_in_month", "revenue_fen", "margin_fen",
    "arpu_3m_fen", "voice_mou", "sms_count", "data_mb", "data_mb_3m", "recharge_fen", "recharge_count",
    "complaint_count", "age", "included_data_mb", "current_value_index", "potential_value_index",
    "offnet_voice_mou", "terminate_reason",
]


def gold_history(spark: SparkSession, lake: LakeLayout, months: list[date], columns: list[str]) -> DataFrame | None:
    """Gold subscriber_month rows of the 13 months before the batch and of gaps inside it.

    None when gold has no such table yet, or was written by an older version without `columns`
    (then every complete month must be rebuilt, which `analyse` does by default).
    """
    gold = delta.read(spark, lake.gold("subscriber_month"))
    if gold is None or not set(columns) <= set(gold.columns):
        return None
    lo = add_months(min(months), -13)
    return gold.where(F.col("month").between(lo, max(months)) & ~isin("month", months)).select(*columns)


def build_subscriber_months(
    spark: SparkSession, lake: LakeLayout, months: list[date], settings: AnalyticsSettings, hmac_key: str
) -> tuple[DataFrame, DataFrame]:
    """subscriber_month rows for `months` (value indices and segments included, CLV not yet),
    and the rows of every month at hand (these and earlier gold ones) for the marts that look back.
    """
    from crm_pipeline.transforms.intermediate.payment_behaviour import account_bills, payment_behaviour
    from crm_pipeline.transforms.marts.value import (
        monthly_contacts,
        plan_allowances,
        with_margin,
        with_value_components,
        with_value_segments,
    )

    lo = min(months) - timedelta(days=1)
    hi = max(month_days(max(months)))
    snaps = silver(spark, lake, "subscriber").where(F.col("snapshot_date").between(lo, hi))
    # from the Delta log: the days with a snapshot, without reading one
    snapshot_days = {d for d in delta_rs.partition_values(lake.silver("subscriber"), "snapshot_date") or ()
                     if lo <= d <= hi}
    frame = month_frame(spark, months, snapshot_days)
    base = subscriber_month_base(snaps, frame)
    usage = delta.read(spark, lake.gold("daily_usage_by_subscriber"))
    if usage is None:
        raise RuntimeError("gold daily rollups are missing: run the rollup step first")
    usage = monthly_usage(usage.where(F.col("usage_date").between(min(months), hi)))
    revenue = monthly_revenue(silver(spark, lake, "bill").where(isin("bill_month", months)))
    # persisted: the trailing windows join these rows with themselves
    rows = with_margin(subscriber_month(base, usage, revenue, hmac_key), settings.value.cost_to_serve).persist()

    history = gold_history(spark, lake, months, HISTORY_COLUMNS_ALL)
    rows = with_trailing_windows(rows, history if history is not None else rows.select(*HISTORY_COLUMNS).limit(0))

    bill_lo = add_months(min(months), -6)
    bills = silver(spark, lake, "bill").where(F.col("bill_month").between(bill_lo, max(months)))
    payments = silver(spark, lake, "recharge").where(
        (F.col("txn_type") == "BILL_PAYMENT") & F.col("event_date").between(bill_lo, hi)
    ).select("account_id", F.col("event_date").alias("pay_date"), "amount_fen")
    payment = payment_behaviour(account_bills(bills), payments, frame.select("month", "month_end"))
    month_ends = [max(month_days(m)) for m in months]
    plans = silver(spark, lake, "plan").where(isin("snapshot_date", month_ends))
    contacts = monthly_contacts(month_summaries(spark, lake, "contact_months", months))
    rows = with_value_components(rows, payment, contacts, plan_allowances(plans), settings.value)
    rows = with_value_segments(rows, settings.value).withColumn("age", F.year("month") - F.col("birth_year"))

    every = rows.select(*HISTORY_COLUMNS_ALL)
    if history is not None:
        every = every.unionByName(history.select(*HISTORY_COLUMNS_ALL))
    return rows, every


def build_months(
    spark: SparkSession,
    lake: LakeLayout,
    months: list[date],
    settings: AnalyticsSettings,
    hmac_key: str,
    progress: Callable[[str], None] = print,
) -> dict[str, DataFrame]:
    """Every gold mart for `months`, keyed by table name (schemas/tables/<name>.json)."""
    from crm_pipeline.pipeline.marts import build_marts

    rows, every = build_subscriber_months(spark, lake, months, settings, hmac_key)
    return build_marts(spark, lake, rows, every, months, settings, progress)


def rescore_months(
    spark: SparkSession,
    lake: LakeLayout,
    months: list[date],
    settings: AnalyticsSettings,
    progress: Callable[[str], None] = print,
) -> dict[str, DataFrame] | None:
    """Every gold mart of `months` for a rescore, keyed by table name: the marts that hold churn
    scores (`SCORE_COLUMNS`) scored again from the stored subscriber months and churn features
    with the registry's newest honest models, the others as stored.

    None when that would not equal a rebuild: a month not built yet, or built from deliveries
    since replaced (or one it reads was; `months_to_build`), a mart missing a month, or gold
    written by another version of the pipeline.
    """
    from crm_pipeline.feeds import conform, table_spec
    from crm_pipeline.orchestration import months_to_build
    from crm_pipeline.pipeline.churn import SCORE_COLUMNS, scored_marts
    from crm_pipeline.pipeline.marts import MART_TABLES
    from crm_pipeline.transforms.marts.segments import segment_summary

    stale = {m: why for m, why in months_to_build(lake).items() if m in months}
    if stale:
        progress(f"analyse: {'; '.join(f'{m:%Y-%m} {why}' for m, why in stale.items())}: every mart is rebuilt")
        return None
    spec = table_spec("subscriber_month")
    stored: dict[str, DataFrame] = {}
    for name in ("subscriber_month", "churn_features"):
        if not set(months) <= (delta_rs.partition_values(lake.gold(name), table_spec(name).partition) or set()):
            return None
    for name in MART_TABLES:
        old = delta.read(spark, lake.gold(name))
        if old is None:
            return None
        stored[name] = old.where(F.col(table_spec(name).partition).isin(months))
    if stored["subscriber_month"].columns != [*spec.column_names, *GOLD_EXTRAS] or \
            stored["churn_features"].columns != table_spec("churn_features").column_names:
        return None
    rows = stored["subscriber_month"].drop(*SCORE_COLUMNS["subscriber_month"])
    scored, watchlist, drift = scored_marts(lake, rows, stored["churn_features"], months, settings.churn, progress)
    sm = scored.select(*stored["subscriber_month"].columns)
    rescored = {"subscriber_month": sm, "segment_summary": segment_summary(sm, settings.strategies),
                "churn_watchlist": watchlist, "model_drift": drift}
    if set(rescored) != set(SCORE_COLUMNS):
        raise RuntimeError(f"a rescore rebuilds {sorted(rescored)}, the marts with scores are {sorted(SCORE_COLUMNS)}")
    for name, df in rescored.items():
        with stage("marts", name):
            stored[name] = (df if name == "subscriber_month" else conform(df, table_spec(name))).localCheckpoint(
                eager=True)
    return stored


def consistency_checks(kpi: DataFrame) -> DataFrame:
    """One row per (month, dimension, value) with the gaps that must be 0: the lifecycle identity,
    and each dimension's sums against ALL."""
    identity = kpi.select(
        "month", "dimension", "dimension_value",
        (F.col("opening_subscribers") + F.col("gross_adds") - F.col("churned_subscribers")
         - F.col("closing_subscribers")).alias("identity_gap"),
    )
    measures = ["active_subscribers", "opening_subscribers", "closing_subscribers", "gross_adds",
                "churned_subscribers", "revenue_fen"]
    sums = kpi.groupBy("month", "dimension").agg(*[F.sum(m).alias(m) for m in measures])
    all_ = sums.where("dimension = 'ALL'").select("month", *[F.col(m).alias(f"all_{m}") for m in measures])
    gaps = sums.join(all_, "month").select(
        "month", "dimension", F.lit("*").alias("dimension_value"),
        F.greatest(*[F.abs(F.col(m) - F.col(f"all_{m}")) for m in measures]).alias("sum_gap"),
    )
    return identity.withColumn("sum_gap", F.lit(0).cast("long")).unionByName(
        gaps.withColumn("identity_gap", F.lit(0).cast("long"))
    )


def reconciliation_checks(tables: dict[str, DataFrame]) -> DataFrame:
    """One row per month with what must hold between the marts of the month (0 when it does):
    subscribers counted by segment_summary against the segmented rows of subscriber_month, and
    the rows of the per-subscriber and per-group marts whose subscriber or group has no row in
    that month's subscriber_month (orphans)."""
    sm = tables["subscriber_month"]
    subscribers = sm.select("month", "subscriber_id")
    groups = sm.where(F.col("group_id").isNotNull()).select("month", "group_id").distinct()
    out = sm.groupBy("month").agg(F.count("value_segment").alias("segmented")).join(
        tables["segment_summary"].groupBy("month").agg(F.sum("subscribers").alias("summarised")), "month", "left")
    checks = [F.abs(F.col("segmented") - F.coalesce("summarised", F.lit(0))).alias("segment_gap")]
    for name, keys, key in (("churn_watchlist", subscribers, "subscriber_id"),
                            ("lost_customers", subscribers, "subscriber_id"),
                            ("migration_candidates", subscribers, "subscriber_id"),
                            ("key_account_month", groups, "group_id")):
        orphans = tables[name].join(keys, ["month", key], "left_anti").groupBy("month").agg(
            F.count(F.lit(1)).alias(f"{name}_orphans"))
        out = out.join(orphans, "month", "left")
        checks.append(F.coalesce(f"{name}_orphans", F.lit(0)).alias(f"{name}_orphans"))
    return out.select("month", *checks)


def record_restatements(lake: LakeLayout, restated: list[tuple]) -> None:
    """Append (month, table, run id, rows before, rows after, detected at) rows to ops/restatements
    (columns from schemas/tables/restatements.json)."""
    from crm_pipeline.feeds import table_spec

    columns = table_spec("restatements").column_names
    ops.append_rows_arrow(lake, "restatements", [dict(zip(columns, r)) for r in restated])


#: decimals a floating-point column is rounded to before it is hashed: a sum or mean of doubles
#: depends on the order Spark adds them in, so two runs over the same rows may differ in the last
#: bits, which is not a restatement
HASH_DECIMALS = 6


def record_inputs(lake: LakeLayout, ctx: ops.RunContext, months: list[date],
                  loaded: dict[tuple[str, date], str]) -> None:
    """crm_ops month_inputs: the deliveries each built month read (lineage, and what the monthly
    DAG compares the loaded deliveries with to find the months to rebuild). A month built again in
    the same run (`crm run`'s rescore after its analyse, or the monthly DAG's) replaces the run's
    rows of that month: one row per run, month, feed and day, the table's key."""
    from crm_pipeline.orchestration import month_inputs

    now = ops.utcnow()
    ops.append_rows_arrow(lake, "month_inputs", [
        dict(run_id=ctx.run_id, month=m, feed=feed, business_date=day, delivery_id=delivery, built_at=now)
        for m in months for (feed, day), delivery in sorted(month_inputs(m, loaded).items())],
        replacing=f"run_id = {delta.sql_literal(ctx.run_id)} AND {delta.in_predicate('month', months)}")


def _hashed(df: DataFrame, cols: list[str]):
    """An order-independent row hash of `cols`, floating-point columns rounded (HASH_DECIMALS)."""
    floating = {f.name for f in df.schema.fields if f.dataType.typeName() in ("double", "float")}
    return F.xxhash64(*[F.round(c, HASH_DECIMALS) if c in floating else F.col(c) for c in cols])


def fingerprints(df: DataFrame, partition: str = "month") -> dict[date, tuple[int, str | None]]:
    """Per month: row count and an order-independent content hash (restatement detection)."""
    cols = sorted(c for c in df.columns if c != partition)
    got = df.select(F.col(partition).alias("_p"), _hashed(df, cols).cast("decimal(38,0)").alias("h")).groupBy(
        "_p").agg(F.count(F.lit(1)).alias("n"), F.sum("h").alias("s")).collect()
    return {r._p: (int(r.n), str(r.s)) for r in got}


def fingerprint(df: DataFrame) -> tuple[int, str | None]:
    """Row count and an order-independent content hash of a whole table."""
    got = df.select(_hashed(df, sorted(df.columns)).cast("decimal(38,0)").alias("h")).agg(
        F.count(F.lit(1)).alias("n"), F.sum("h").alias("s")
    ).collect()[0]
    return int(got.n), None if got.s is None else str(got.s)


def changed_beyond_scores(name: str, old: DataFrame, new: DataFrame, partition: str, months: list[date]) -> bool:
    """Whether a mart's content for `months` differs in more than the churn-score columns."""
    from crm_pipeline.pipeline.churn import SCORE_COLUMNS

    drop = SCORE_COLUMNS.get(name, ())
    if drop is None:  # the whole table derives from the scores
        return False
    return fingerprints(old.where(isin(partition, months)).drop(*drop), partition) != \
        fingerprints(new.drop(*drop), partition)


def _write_gold(lake: LakeLayout, name: str, old: DataFrame | None, df: DataFrame, partition: str,
                targets: list[date], every_month: bool, after: dict[date, tuple[int, str | None]]) -> None:
    """Replace the target months of a gold mart (`old`: as stored, None before its first write);
    rewrite it whole when its columns changed. The commit records each target month's
    fingerprint (`after`; `stored_fingerprints` reads them)."""
    path = lake.gold(name)
    if old is not None and old.schema.simpleString() != df.schema.simpleString():
        if not every_month:
            raise RuntimeError(
                f"gold/{name} was written by another version of the pipeline (its columns differ): "
                "run `crm analyse` without --month to rebuild every complete month")
        df.write.format("delta").mode("overwrite").option("overwriteSchema", "true") \
            .option("optimizeWrite", "true").option("userMetadata", json.dumps(_fingerprint_record(
                targets, after, whole_table=True))).partitionBy(partition).save(path)
        return
    delta.replace_where(df, path, delta.in_predicate(partition, targets), [partition],
                        record=_fingerprint_record(targets, after, whole_table=old is None),
                        rows_at_most=sum(rows for rows, _ in after.values()))  # a small mart: no Spark write


def _fingerprint_record(months: list[date], fingerprints: dict[date, tuple[int, str | None]],
                        whole_table: bool) -> dict:
    """What a gold mart's commit records: the fingerprint of each month it wrote (null: no rows),
    and whether it wrote the whole table (then no other month holds rows)."""
    return {"fingerprints": {m.isoformat(): list(fingerprints[m]) if m in fingerprints else None for m in months},
            "hash_decimals": HASH_DECIMALS, "whole_table": whole_table}


def stored_fingerprints(path: str, months: list[date]) -> dict[date, tuple[int, str | None] | None]:
    """The fingerprints of `months` of a gold mart as its commits recorded them (`_write_gold`),
    without Spark: per month found, (rows, hash), or None when it holds no rows. A month is left out
    when no commit since another writer's (or an older pipeline's) recorded it: its rows must be
    read to know."""
    from crm_pipeline.io import delta_rs

    found: dict[date, tuple[int, str | None] | None] = {}
    for record in delta_rs.write_records(path):
        if record is None or record.get("hash_decimals") != HASH_DECIMALS or "fingerprints" not in record:
            break  # another writer's commit: what it changed is unknown
        for month, fp in record["fingerprints"].items():
            found.setdefault(date.fromisoformat(month), None if fp is None else (int(fp[0]), fp[1]))
        if record.get("whole_table"):  # no month it left out holds rows
            found.update({m: None for m in months if m not in found})
        if set(months) <= found.keys():
            break
    return {m: found[m] for m in months if m in found}


def _replace_gold(spark: SparkSession, lake: LakeLayout, ctx: ops.RunContext, name: str, new: DataFrame,
                  targets: list[date], every_month: bool, rescore: bool, restated: list[tuple],
                  unchanged: list[str], progress: Callable[[str], None]) -> None:
    """Write one mart's target months unless their content is unchanged (then append its name to
    `unchanged`); append a restatement row to `restated` for every month whose content moved."""
    from crm_pipeline.feeds import table_spec

    partition = table_spec(name).partition
    old = delta.read(spark, lake.gold(name))
    same_shape = old is not None and old.schema.simpleString() == new.schema.simpleString()
    before = _fingerprints_before(lake.gold(name), old, partition, targets) if same_shape else {}
    after = fingerprints(new, partition)
    if same_shape and before == after:
        unchanged.append(name)  # same content: no new table version
        return
    if rescore and before and not changed_beyond_scores(name, old, new, partition, targets):
        before = {}  # only the churn scores moved: a new model, not a restatement
    for m in targets:
        if before.get(m) and before[m] != after.get(m):
            restated.append((m, name, ctx.run_id, before[m][0], after.get(m, (0, None))[0], ops.utcnow()))
            progress(f"  {m:%Y-%m}: {name} restated ({before[m][0]:,} -> {after.get(m, (0,))[0]:,} rows)")
    _write_gold(lake, name, old, new, partition, targets, every_month, after)


def _fingerprints_before(path: str, old: DataFrame, partition: str, targets: list[date]
                         ) -> dict[date, tuple[int, str | None]]:
    """The fingerprints of the target months a gold mart holds now (months without rows left out):
    as its commits recorded them, and from its rows for the months no commit did."""
    stored = stored_fingerprints(path, targets)
    unknown = [m for m in targets if m not in stored]
    out = {m: fp for m, fp in stored.items() if fp is not None}
    if unknown:
        out.update(fingerprints(old.where(isin(partition, unknown)), partition))
    return out


def months_to_analyse(
    lake: LakeLayout,
    settings: AnalyticsSettings,
    months: list[date] | None = None,
    rescore: bool = False,
    required: list[date] | None = None,
    progress: Callable[[str], None] = print,
) -> tuple[list[date], list[date]]:
    """(the months `analyse` builds, every complete month), from the delivery log, silver bill's
    Delta log and the model registry: no Spark, so a command with nothing to build never starts it.

    Every complete month (or those of `months`). A month named in `months` or `required` that is not
    complete fails (PipelineError naming what it waits for). With `rescore`, only the complete months
    whose newest honest churn model differs from the one recorded in gold subscriber_month, and
    months not complete are skipped, saying so.
    """
    named = sorted(set(months or []) | set(required or []))
    readiness = lake_readiness(lake, max(named) if named else None)
    complete = [m for m, waits in readiness.items() if not waits]
    targets = sorted(set(months) & set(complete)) if months else complete
    if not rescore:
        require_complete(named, readiness)
        return targets, complete
    for m in sorted(set(months or []) - set(complete)):
        waits = "; ".join(readiness.get(m) or ["nothing loaded"])
        progress(f"analyse: {m:%Y-%m} is not complete, not rescored: {waits}")
    from crm_pipeline.pipeline.churn import months_to_rescore

    return months_to_rescore(lake, targets, settings.churn), complete


def months_out_of_date(lake: LakeLayout, complete: list[date]) -> dict[date, str]:
    """Of the `complete` months, those whose gold differs from what a build would write now, with
    why (no Spark): every month when a mart is missing or holds other columns than this version of
    the pipeline writes; else the months `months_to_build` names (not built yet, or built from
    deliveries since replaced or added), a month gold subscriber_month or churn_features lacks, and
    every complete month after the first of these (its trailing windows read it). `crm run` builds
    these and leaves the others, built from the deliveries loaded now, as they are."""
    from crm_pipeline.feeds import table_spec
    from crm_pipeline.orchestration import months_to_build
    from crm_pipeline.pipeline.marts import MART_TABLES

    for name in MART_TABLES:
        stored = delta_rs.table(lake.gold(name))
        if stored is None:
            return {m: f"gold/{name} not written yet" for m in complete}
        expected = [*table_spec(name).column_names, *(GOLD_EXTRAS if name == "subscriber_month" else ())]
        if [f.name for f in stored.schema().fields] != expected:
            return {m: f"gold/{name} written by another version of the pipeline" for m in complete}
    out = {m: why for m, why in months_to_build(lake).items() if m in complete}
    for name in ("subscriber_month", "churn_features"):
        held = delta_rs.partition_values(lake.gold(name), table_spec(name).partition) or set()
        out.update({m: f"missing from gold/{name}" for m in complete if m not in held and m not in out})
    if out:
        first = min(out)
        out.update({m: f"reads {first:%Y-%m}, rebuilt" for m in complete if m > first and m not in out})
    return dict(sorted(out.items()))


def nothing_to_analyse(lake: LakeLayout, ctx: ops.RunContext, rescore: bool,
                       progress: Callable[[str], None] = print, complete: list[date] | None = None) -> None:
    """Say, and record, that `analyse` found no month to build (or to rescore): none complete, or
    every `complete` month already built from the deliveries loaded now."""
    if rescore:
        message = "nothing to rescore"
        progress("analyse: every month is scored by its newest honest churn model; nothing to rescore")
    elif complete:
        span = f"{complete[0]:%Y-%m} .. {complete[-1]:%Y-%m}"
        message = f"gold current: every complete month ({span}) built from the deliveries loaded now"
        progress(f"analyse: every complete month ({span}) is built from the deliveries loaded now; none rebuilt "
                 "(`crm analyse --month YYYY-MM` rebuilds a month regardless)")
    else:
        message = "no complete month to build"
        progress("analyse: no complete month to build")
    ops.record_step(lake, ctx, ops.utcnow(), message)


def analyse(
    spark: SparkSession,
    lake: LakeLayout,
    ctx: ops.RunContext,
    settings: AnalyticsSettings,
    hmac_key: str,
    months: list[date] | None = None,
    progress: Callable[[str], None] = print,
    rescore: bool = False,
    required: list[date] | None = None,
    plan: tuple[list[date], list[date]] | None = None,
) -> list[date]:
    """Build every gold mart for the months `months_to_analyse` picks (or `plan`, its result when
    the caller has it) and print a summary. With `rescore`, only the marts that hold churn scores
    are rebuilt, from the stored subscriber months and churn features (`rescore_months`), unless a
    month was built from deliveries since replaced: then every mart is, and changes beyond the score
    columns are recorded as restatements.
    """
    from crm_pipeline.pipeline.marts import MART_TABLES
    from crm_pipeline.pipeline.summary import print_summary

    loaded = ops.loaded_deliveries(lake)  # what this build reads (lineage: crm_ops.month_inputs)
    targets, complete = plan or months_to_analyse(lake, settings, months, rescore, required, progress)
    if not targets:
        nothing_to_analyse(lake, ctx, rescore, progress, complete)
        return []
    started = ops.utcnow()
    progress(f"analyse: {'rescoring' if rescore else 'building'} {len(targets)} months "
             f"{targets[0]:%Y-%m} .. {targets[-1]:%Y-%m}")
    # All months in one pass: trailing windows read earlier months of the same batch.
    clock = time.monotonic()
    with bar(1, "analyse: build", "pass") as built:
        tables = rescore_months(spark, lake, targets, settings, progress) if rescore else None
        if tables is None:
            tables, marts = build_months(spark, lake, targets, settings, hmac_key, progress), MART_TABLES
        else:  # only the churn scores can have moved: the marts that hold them
            from crm_pipeline.pipeline.churn import SCORE_COLUMNS

            marts = tuple(name for name in MART_TABLES if name in SCORE_COLUMNS)
        built.update(1)
    dq: list[dict] = []
    n = len(targets)
    counts = {"months": n, "months_x3": 3 * n, "months_x4": 4 * n, "months_x8": 8 * n, "months_x101": 101 * n}
    for name in track(marts, "analyse: validate", "marts"):
        frame = consistency_checks(tables[name]) if name == "kpi_month" else tables[name]
        with stage("validate", name):
            results = gx.dq_rows(gx.validate(frame, f"gold_{name}", counts, ctx.run_id), f"gold_{name}", ctx.run_id,
                                 targets[-1])
        dq += results
        failed = sum(not r["success"] for r in results)
        progress(f"  gold/{name}: built and validated{f', {failed} checks FAILED' if failed else ''} "
                 f"({time.monotonic() - clock:.1f} s)")
        clock = time.monotonic()
    with stage("validate", "reconciliation"):
        dq += gx.dq_rows(gx.validate(reconciliation_checks(tables), "gold_reconciliation", counts, ctx.run_id),
                         "gold_reconciliation", ctx.run_id, targets[-1])
    blocking = gx.blocking_error(dq)
    if blocking is not None:  # nothing of these months is written; the results go on record
        raise blocking
    restated: list[tuple] = []
    unchanged: list[str] = []
    for name in track(marts, "analyse: write", "marts"):
        with stage("gold_write", name):
            _replace_gold(spark, lake, ctx, name, tables[name], targets, targets == complete, rescore, restated,
                          unchanged, progress)
        faults.point("gold")
    if unchanged:
        progress(f"analyse: unchanged, not rewritten: {', '.join(unchanged)}")
    progress(f"analyse: gold written ({time.monotonic() - clock:.1f} s)")
    print_summary(tables, targets, progress)
    from crm_pipeline.pipeline.churn import print_churn_summary

    print_churn_summary(lake, tables, targets, progress)
    ops.write_data_quality(lake, dq)
    record_restatements(lake, restated)
    record_inputs(lake, ctx, targets, loaded)
    ops.record_step(lake, ctx, started,
                    f"{'rescored' if rescore else 'built'} {', '.join(m.strftime('%Y-%m') for m in targets)}",
                    targets[-1])
    return targets


