"""Landing -> bronze -> silver for a batch of complete deliveries, with exact per-file accounting.

Per feed, one Spark pass over all of the batch's files:

1. verify every file against its control line; a delivery with any failed check loads nothing;
2. read numbered lines, split them; structurally bad lines go to the quarantine;
3. bronze: replace the batch's business dates (a re-delivery replaces its day atomically);
4. silver: rebuild every partition date the batch touches (and that the replaced delivery
   touched) from bronze: type, validate, map numbers to subscriptions, latest delivery wins;
5. quarantine the batch's rejects; count each file's records as loaded, quarantined or
   duplicate, and check that the counts add up to the lines read.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline import ops
from crm_pipeline.feeds import FeedSpec, load_feeds
from crm_pipeline.ingest.landing import Delivery, discover
from crm_pipeline.ingest.spark_io import read_lines, source_file, verify_deliveries
from crm_pipeline.io import delta
from crm_pipeline.quality import gx
from crm_pipeline.settings import LakeLayout
from crm_pipeline.transforms.staging.parse import LATE_DAYS, LINEAGE, split_raw_lines, type_and_validate
from crm_pipeline.transforms.staging.silver import (
    holders_by_day,
    latest_version_wins,
    map_to_subscribers,
    outcome,
    partition_date,
    with_partition_date,
)

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ["feed", *LINEAGE, "reject_reason", "reject_detail", "raw_line", "run_id"]


class AccountingError(RuntimeError):
    """Records read != loaded + quarantined + duplicates: never expected; stops the run."""


@dataclass
class IngestResult:
    run_id: str
    rows: list[dict] = field(default_factory=list)  # crm_ops.pipeline_runs rows
    dq_rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    changed: dict[str, set[date]] = field(default_factory=dict)  # feed -> silver partitions rewritten

    @property
    def ok(self) -> bool:
        return not self.failures

    def totals_by_feed(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in self.rows:
            t = out[r["feed"]]
            t["files"] += 1
            for k in ("rows_read", "rows_loaded", "rows_quarantined", "rows_duplicate"):
                t[k] += r[k]
            t["failed_files"] += r["status"] == "FAILED"
        return {k: dict(v) for k, v in out.items()}


def _row(ctx: ops.RunContext, d: Delivery, file_name: str, started, status: str, counts: dict, message: str) -> dict:
    return dict(
        run_id=ctx.run_id, dag_id=ctx.dag_id, task_id=ctx.task_id, feed=d.feed, business_date=d.business_date,
        source_file=source_file(d, file_name), delivery_id=d.delivery_id, started_at=started,
        finished_at=ops.utcnow(), status=status, rows_read=counts.get("read", 0),
        rows_loaded=counts.get("loaded", 0), rows_quarantined=counts.get("quarantined", 0),
        rows_duplicate=counts.get("duplicate", 0), message=message,
    )


def ingest(
    spark: SparkSession,
    landing: Path,
    lake: LakeLayout,
    ctx: ops.RunContext,
    feeds: list[str] | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    progress: Callable[[str], None] = print,
) -> IngestResult:
    """Load every complete delivery not loaded yet (or re-delivered since) in the date range."""
    specs = load_feeds()
    if feeds:
        unknown = set(feeds) - specs.keys()
        if unknown:
            raise ValueError(f"unknown feeds {sorted(unknown)}; known: {', '.join(specs)}")
        specs = {k: v for k, v in specs.items() if k in feeds}
    result = IngestResult(ctx.run_id)
    started = ops.utcnow()
    found = discover(landing, list(specs), date_from, date_to)
    loaded = ops.loaded_deliveries(spark, lake)
    todo = [d for d in found if loaded.get((d.feed, d.business_date)) != d.delivery_id]
    progress(f"ingest: {len(found)} complete deliveries in {landing}, {len(todo)} new or re-delivered")

    verifiable = [d for d in todo if d.control_error is None]
    checks = verify_deliveries(spark, verifiable)
    passed: list[Delivery] = []
    for d in todo:
        if d.control_error:
            _fail(result, ctx, d, d.control_file.name, started, d.control_error)
            continue
        bad = [c for c in checks[d.delivery_id] if c.check]
        if bad:
            for c in bad:
                _fail(result, ctx, d, c.file_name, started, f"{c.detail} (check {c.check}); delivery not loaded")
            continue
        passed.append(d)

    snapshot_days = {day for (feed, day) in loaded if feed == "subscriber"}
    delivery_log: list[tuple] = []
    for spec in specs.values():
        batch = [d for d in passed if d.feed == spec.feed]
        if spec.msisdn_field:
            waiting = [d for d in batch if d.business_date not in snapshot_days]
            for d in waiting:
                msg = f"{d.feed} {d.business_date}: waiting for the subscriber snapshot of that day"
                result.waiting.append(msg)
                result.rows.append(_row(ctx, d, "", started, "WAITING", {}, msg))
            batch = [d for d in batch if d.business_date in snapshot_days]
        if not batch:
            continue
        t0 = time.monotonic()
        try:
            rows, dq_rows, touched = load_feed(
                spark, lake, spec, batch, ctx, {c.file_name: c.rows for d in batch for c in checks[d.delivery_id]}
            )
        except gx.DataQualityError as exc:
            result.dq_rows.extend(getattr(exc, "rows", []))
            for d in batch:
                _fail(result, ctx, d, "", started, str(exc))
            progress(f"  {spec.feed}: FAILED data-quality checks: {exc}")
            continue
        result.rows.extend(rows)
        result.dq_rows.extend(dq_rows)
        result.changed[spec.feed] = touched
        delivery_log.extend((d.feed, d.business_date, d.delivery_id, ctx.run_id, "LOADED") for d in batch)
        if spec.feed == "subscriber":
            snapshot_days |= {d.business_date for d in batch}
        t = IngestResult(ctx.run_id, rows).totals_by_feed()[spec.feed]
        progress(
            f"  {spec.feed:<10} {len(batch):>4} deliveries {t['files']:>5} files  read {t['rows_read']:>10,}  "
            f"loaded {t['rows_loaded']:>10,}  quarantined {t['rows_quarantined']:>7,}  "
            f"duplicates {t['rows_duplicate']:>7,}  ({time.monotonic() - t0:.1f} s)"
        )
    ops.log_silver_changes(spark, lake, ctx.run_id, result.changed)
    ops.log_deliveries(spark, lake, delivery_log)
    ops.write_pipeline_runs(spark, lake, result.rows)
    ops.write_data_quality(spark, lake, result.dq_rows)
    for msg in result.failures:
        progress(f"  FAILED {msg}")
    for msg in result.waiting:
        progress(f"  WAITING {msg}")
    return result


def _fail(result: IngestResult, ctx, d: Delivery, file_name: str, started, message: str) -> None:
    log.error(message)
    result.failures.append(message)
    result.rows.append(_row(ctx, d, file_name, started, "FAILED", {}, message))


def _partition_values(typed: DataFrame, column: str) -> set:
    return {r[0] for r in typed.where(F.col(column).isNotNull()).select(column).distinct().collect()}


def _other_versions(bronze: DataFrame, spec: FeedSpec, touched: set, batch_days: list[date]) -> DataFrame:
    """Bronze rows of other deliveries that can hold a version of a record in the touched partitions."""
    outside = ~F.col("business_date").isin(batch_days)
    if spec.kind == "snapshot" or not touched:  # a snapshot day stands alone
        return bronze.where(F.lit(False))
    lo = min(touched)
    if spec.kind == "monthly" or spec.feed == "ticket":  # corrections and ticket updates come any time later
        return bronze.where(outside & (F.col("business_date") >= lo))
    hi = max(touched) + timedelta(days=LATE_DAYS)  # events arrive at most 3 days late
    return bronze.where(outside & F.col("business_date").between(lo, hi))


def load_feed(
    spark: SparkSession,
    lake: LakeLayout,
    spec: FeedSpec,
    batch: list[Delivery],
    ctx: ops.RunContext,
    expected_rows: dict[str, int],
) -> tuple[list[dict], list[dict], set[date]]:
    """Load one feed's verified deliveries.

    Returns pipeline_runs rows, data-quality rows and the silver partition dates rewritten.
    """
    started = ops.utcnow()
    batch_days = sorted({d.business_date for d in batch})
    part_col, _ = partition_date(spec)
    dq_rows: list[dict] = []

    split = split_raw_lines(read_lines(spark, batch), spec).persist(StorageLevel.MEMORY_AND_DISK)
    bronze_batch = split.where(F.col("reject_reason").isNull()).select(
        *LINEAGE, *spec.field_names, F.lit(ctx.run_id).alias("run_id")
    )
    structural = split.where(F.col("reject_reason").isNotNull()).select(
        *LINEAGE, "raw_line", "reject_reason", "reject_detail"
    )
    dq_rows += gx.enforce(bronze_batch, f"bronze_{spec.feed}", ctx.run_id, batch_days[-1])

    bronze_path = lake.bronze(spec.feed)
    typed_batch = with_partition_date(type_and_validate(bronze_batch, spec), spec).persist(
        StorageLevel.MEMORY_AND_DISK
    )
    previous = delta.read(spark, bronze_path)
    if spec.kind == "snapshot":
        touched = set(batch_days)
    else:
        touched = _partition_values(typed_batch, part_col)
        if previous is not None:
            replaced = previous.where(F.col("business_date").isin(batch_days))
            touched |= _partition_values(with_partition_date(type_and_validate(replaced, spec), spec), part_col)

    delta.replace_where(
        bronze_batch, bronze_path, delta.in_predicate("business_date", batch_days), ["business_date"]
    )

    # Versions from other deliveries come from bronze; the batch is reused as already typed.
    typed = typed_batch
    if previous is not None:
        others = _other_versions(spark.read.format("delta").load(bronze_path), spec, touched, batch_days)
        typed = typed.unionByName(with_partition_date(type_and_validate(others, spec), spec))
    if spec.msisdn_field:
        subscribers = delta.read(spark, lake.silver("subscriber"))
        if subscribers is None:
            raise RuntimeError("msisdn-keyed feeds need the silver subscriber snapshot; load `subscriber` first")
        holders = holders_by_day(subscribers.where(F.col("snapshot_date").isin(sorted(touched)) if touched else F.lit(False)))
        typed = map_to_subscribers(typed, holders, spec)
    typed = latest_version_wins(typed, spec).withColumn("outcome", outcome()).persist(StorageLevel.MEMORY_AND_DISK)

    silver_cols = [part_col, *spec.field_names] + (["subscriber_id"] if spec.msisdn_field else []) + LINEAGE
    if touched:
        silver_new = typed.where(F.col("is_winner") & F.col(part_col).isin(sorted(touched))).select(*silver_cols)
        dq_rows += gx.enforce(silver_new, f"silver_{spec.feed}", ctx.run_id, batch_days[-1])
        delta.replace_where(
            silver_new, lake.silver(spec.feed), delta.in_predicate(part_col, touched), [part_col]
        )

    batch_records = typed.where(F.col("business_date").isin(batch_days))
    rejects = structural.unionByName(
        batch_records.where(F.col("outcome") == "quarantined").select(
            *LINEAGE, "raw_line", "reject_reason", "reject_detail"
        )
    )
    quarantine = rejects.select(F.lit(spec.feed).alias("feed"), *rejects.columns, F.lit(ctx.run_id).alias("run_id"))
    delta.replace_where(
        quarantine.select(*QUARANTINE_COLUMNS),
        lake.quarantine,
        f"feed = {delta.sql_literal(spec.feed)} AND " + delta.in_predicate("business_date", batch_days),
        ["feed", "business_date"],
    )

    counted = (
        structural.select("source_file", F.lit("quarantined").alias("outcome"))
        .unionByName(batch_records.select("source_file", "outcome"))
        .groupBy("source_file", "outcome")
        .count()
        .collect()
    )
    split.unpersist()
    typed_batch.unpersist()
    typed.unpersist()
    per_file: dict[str, dict[str, int]] = defaultdict(dict)
    for r in counted:
        per_file[r.source_file][r.outcome] = r["count"]
    rows = []
    for d in batch:
        for e in d.entries:
            name = source_file(d, e.file_name)
            counts = per_file.get(name, {})
            counts["read"] = expected_rows[e.file_name]
            accounted = sum(counts.get(k, 0) for k in ("loaded", "quarantined", "duplicate"))
            if accounted != counts["read"]:
                raise AccountingError(
                    f"{name}: read {counts['read']} records but accounted for {accounted} "
                    f"(loaded + quarantined + duplicate): {counts}"
                )
            note = f"; ignored unlisted files {', '.join(d.unlisted_files)}" if d.unlisted_files else ""
            rows.append(_row(ctx, d, e.file_name, started, "SUCCESS", counts, f"loaded{note}"))
    return rows, dq_rows, touched
