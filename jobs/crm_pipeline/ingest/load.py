"""Landing -> bronze -> silver for a batch of complete deliveries, with exact per-file accounting.

Per feed:

1. bronze, in one pass over each file: verify it against its control line while reading, split
   numbered lines into string fields (structurally bad lines keep their raw text and reason),
   write them as Parquet from the reading tasks and replace the batch's business dates in one
   transaction (`spark_io.write_bronze`); the same tasks type and validate the valid lines into a
   scratch copy, and copy the rejected lines apart (`spark_io.TypedCopy`). A file failing a check
   aborts the write; its delivery is dropped and the others are written again, so a delivery
   loads whole or not at all;
2. silver, from the batch's typed records: map numbers to subscriptions, keep the latest
   delivery's version of each record. A first delivery of its days is merged into silver
   (appended, or upserted where it supersedes stored versions); a re-delivered day, bills and
   tickets rebuild the partitions they touch from bronze, so withdrawn records disappear;
3. quarantine the batch's rejects (written before silver, from the same cached frame and the copy
   of the rejected lines); count each file's records as loaded, quarantined or duplicate, and
   check that the counts add up to the lines the control file declared.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from crm_pipeline import faults, ops
from crm_pipeline.columns import isin
from crm_pipeline.errors import PipelineError
from crm_pipeline.feeds import FeedSpec, load_feeds
from crm_pipeline.ingest.landing import Delivery, IncompleteFolder, discover
from crm_pipeline.ingest.reader import join
from crm_pipeline.ingest.spark_io import (
    TypedCopy, TypedFiles, clear, failed_check, source_file, verify_deliveries, write_bronze,
)
from crm_pipeline.ingest.volume import delivered_volumes, volume_drop
from crm_pipeline.progress import bar
from crm_pipeline.io import delta, delta_rs
from crm_pipeline.quality import gx
from crm_pipeline.settings import LakeLayout
from crm_pipeline.spark import uncompressed_cache
from crm_pipeline.stages import stage
from crm_pipeline.transforms.staging.parse import (
    LINEAGE, REJECT_COLUMNS, STRUCTURAL_SCHEMA, FileIndex, type_and_validate, typed_schema,
)
from crm_pipeline.transforms.staging.validate import LATE_DAYS
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
#: silver's readers select by its partition date, and a re-delivery finds the records of the delivery
#: it replaces by their business date: the only column whose file statistics are kept
SILVER_STATISTICS = delta.statistics_on(["business_date"])


class AccountingError(PipelineError):
    """Records read != loaded + quarantined + duplicates: never expected; stops the run."""


@dataclass
class IngestResult:
    run_id: str
    rows: list[dict] = field(default_factory=list)  # crm_ops.pipeline_runs rows
    dq_rows: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)  # INCOMPLETE folders and MISSING feed days
    warnings: list[str] = field(default_factory=list)  # loaded, but suspect (volume drops)

    @property
    def ok(self) -> bool:
        return not self.failures

    def deliveries(self, status: str) -> int:
        """Deliveries (feed x business date) with a file of that status in this run (SUCCESS: loaded)."""
        return len({(r["feed"], r["business_date"]) for r in self.rows if r["status"] == status})

    def totals_by_feed(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for r in self.rows:
            if r["status"] in ("INCOMPLETE", "MISSING"):  # nothing delivered to count
                continue
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
    landing: str | Path,
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
    incomplete: list[IncompleteFolder] = []
    found = discover(landing, list(specs), date_from, date_to, incomplete)
    loaded = ops.loaded_deliveries(lake)
    todo = [d for d in found if loaded.get((d.feed, d.business_date)) != d.delivery_id]
    progress(f"ingest: {len(found)} complete deliveries in {landing}, {len(todo)} new or re-delivered")
    _note_gaps(result, ctx, specs, found, incomplete, loaded, started)

    readable: list[Delivery] = []
    for d in todo:
        if d.control_error:
            _fail(result, ctx, d, d.control_name, started, d.control_error, "control_format")
        elif d.unlisted_data_files:
            for name in d.unlisted_data_files:
                _fail(result, ctx, d, name, started,
                      f"{join(d.directory, name)}: check unlisted_file failed: a data file of this delivery is "
                      f"not in its control file {d.control_name}; delivery not loaded", "unlisted_file")
        else:
            readable.append(d)

    snapshot_days = {day for (feed, day) in loaded if feed == "subscriber"}
    delivery_log: list[tuple] = []
    holders = Holders(spark, lake)
    with bar(len(readable), "ingest", "deliveries") as deliveries:
        try:
            for spec in specs.values():
                batch = [d for d in readable if d.feed == spec.feed]
                if spec.feed == "subscriber" and batch:
                    holders.release()
                _load_batch(spark, lake, ctx, spec, batch, snapshot_days, result, delivery_log, started, progress,
                            holders, on_record={day for (feed, day) in loaded if feed == spec.feed})
                deliveries.update(len(batch))
        finally:
            holders.release()
    _note_volume_drops(result, lake, ctx, specs, loaded, delivery_log)
    ops.log_deliveries(lake, delivery_log)
    ops.write_pipeline_runs(lake, result.rows)
    ops.write_data_quality(lake, result.dq_rows)
    for msg in result.failures:
        progress(f"  FAILED {msg}")
    for msg in result.waiting:
        progress(f"  WAITING {msg}")
    for msg in result.gaps + result.warnings:
        progress(f"  {msg}")
    return result



def _load_batch(spark: SparkSession, lake: LakeLayout, ctx: ops.RunContext, spec: FeedSpec, batch: list[Delivery],
                snapshot_days: set[date], result: IngestResult, delivery_log: list[tuple], started: datetime,
                progress: Callable[[str], None], holders: Holders, on_record: set[date] = frozenset()) -> None:
    """Load one feed's readable deliveries as one batch; its outcome goes on `result` and
    `delivery_log`, and the snapshot days it loads join `snapshot_days` (for the feeds after it).
    `on_record`: the feed's days with a loaded delivery in ops/deliveries."""
    if spec.msisdn_field:
        waiting = [d for d in batch if d.business_date not in snapshot_days]
        for d in waiting:
            msg = f"{d.feed} {d.business_date}: waiting for the subscriber snapshot of that day"
            result.waiting.append(msg)
            result.rows.append(_row(ctx, d, "", started, "WAITING", {}, msg))
        batch = [d for d in batch if d.business_date in snapshot_days]
    if not batch:
        return
    t0 = time.monotonic()
    try:
        feed_load = load_feed(spark, lake, spec, batch, ctx, holders, on_record)
    except gx.DataQualityError as exc:
        result.dq_rows.extend(getattr(exc, "rows", []))
        for d in batch:
            _fail(result, ctx, d, "", started, str(exc), "data_quality")
        progress(f"  {spec.feed}: FAILED data-quality checks: {exc}")
        return
    except Exception as exc:  # noqa: BLE001 - one feed's crash fails its deliveries, not the other feeds
        message = f"{spec.feed}: load failed: {ops.failure_message(exc)}; deliveries not loaded"
        for d in batch:
            _fail(result, ctx, d, "", started, message, "load")
        progress(f"  {spec.feed}: FAILED {message}")
        return
    for d, file_name, message, check in feed_load.failed:
        _fail(result, ctx, d, file_name, started, message, check)
    result.rows.extend(feed_load.rows)
    result.dq_rows.extend(feed_load.dq_rows)
    if not feed_load.loaded:
        return
    delivery_log.extend((d.feed, d.business_date, d.delivery_id, ctx.run_id, "LOADED")
                        for d in feed_load.loaded)
    if spec.feed == "subscriber":
        snapshot_days.update(d.business_date for d in feed_load.loaded)
    t = IngestResult(ctx.run_id, feed_load.rows).totals_by_feed()[spec.feed]
    progress(
        f"  {spec.feed:<10} {len(feed_load.loaded):>4} deliveries {t['files']:>5} files  "
        f"read {t['rows_read']:>10,}  "
        f"loaded {t['rows_loaded']:>10,}  quarantined {t['rows_quarantined']:>7,}  "
        f"duplicates {t['rows_duplicate']:>7,}  ({time.monotonic() - t0:.1f} s)"
    )


def _note_volume_drops(result: IngestResult, lake: LakeLayout, ctx, specs: dict[str, FeedSpec], loaded: dict,
                       delivery_log: list[tuple]) -> None:
    """A warning check `landing_<feed>: volume_drop(<feed>/<day>)` for each daily delivery loaded
    now that holds far fewer records than the feed's days before it (`ingest.volume`)."""
    new = {(feed, day): delivery_id for feed, day, delivery_id, _, _ in delivery_log if specs[feed].is_daily}
    if not new:
        return
    read: dict[str, int] = defaultdict(int)
    for r in result.rows:
        if r["status"] == "SUCCESS":
            read[r["delivery_id"]] += r["rows_read"]
    history = delivered_volumes(lake, loaded)
    for (feed, day), delivery_id in new.items():
        history.setdefault(feed, {})[day] = read[delivery_id]
    for (feed, day), delivery_id in sorted(new.items()):
        why = volume_drop(history[feed], day, read[delivery_id])
        if why is None:
            continue
        msg = f"{feed}/{day:%Y%m%d}: volume drop: {why}"
        log.warning(msg)
        result.warnings.append(f"WARNING {msg}")
        result.dq_rows += gx.dq_rows([gx.CheckResult(f"volume_drop({feed}/{day:%Y%m%d})", False, read[delivery_id],
                                                     "warning")], f"landing_{feed}", ctx.run_id, day)


def _fail(result: IngestResult, ctx, d: Delivery, file_name: str, started, message: str, check: str) -> None:
    """A delivery that loads nothing: a FAILED run row naming the file, and a failed blocking
    check `landing_<feed>: <check>(<file>)` in crm_ops.data_quality."""
    log.error(message)
    result.failures.append(message)
    result.rows.append(_row(ctx, d, file_name, started, "FAILED", {}, message))
    target = source_file(d, file_name) if file_name else d.delivery_id
    result.dq_rows += gx.dq_rows([gx.CheckResult(f"{check}({target})", False, 1, "blocking")],
                                 f"landing_{d.feed}", ctx.run_id, d.business_date)


def _gap(result: IngestResult, ctx, feed: str, day: date, started, status: str, message: str) -> None:
    """A run row for something not there to load (no file, no counts)."""
    result.gaps.append(f"{status} {message}")
    result.rows.append(dict(ops.step_row(ctx, started, message, day, status), feed=feed))


def _note_gaps(result: IngestResult, ctx, specs: dict[str, FeedSpec], found: list[Delivery],
               incomplete: list[IncompleteFolder], loaded: dict, started) -> None:
    """Put on record what is not there to load: folders without a control file (INCOMPLETE) and
    days a daily feed skipped while it delivered the days before and after (MISSING)."""
    for f in incomplete:
        msg = (f"{f.directory}: no control file {f.feed.upper()}_{f.business_date:%Y%m%d}.ctl "
               f"({len(f.files)} files present): delivery incomplete, not read")
        _gap(result, ctx, f.feed, f.business_date, started, "INCOMPLETE", msg)
    present: dict[str, set[date]] = defaultdict(set)
    for feed, day in [(d.feed, d.business_date) for d in found] + [(f.feed, f.business_date) for f in incomplete]:
        present[feed].add(day)
    for feed, spec in specs.items():
        days = present.get(feed)
        if not spec.is_daily or not days:
            continue
        have = days | {day for (f, day) in loaded if f == feed}
        first = min(days)
        for day in (first + timedelta(days=i) for i in range((max(days) - first).days)):
            if day in have:
                continue
            msg = (f"{feed}/{day:%Y%m%d}: no delivery, while the days before and after have one; "
                   "the month stays incomplete until it arrives")
            _gap(result, ctx, feed, day, started, "MISSING", msg)


@dataclass
class FeedLoad:
    """What loading one feed's batch did."""

    loaded: list[Delivery]  # deliveries now in bronze and silver
    failed: list[tuple[Delivery, str, str, str]]  # (delivery, file name, message, check): loaded nothing
    rows: list[dict] = field(default_factory=list)  # crm_ops.pipeline_runs rows of loaded files
    dq_rows: list[dict] = field(default_factory=list)


def _partition_values(typed: DataFrame, column: str) -> set:
    return {r[0] for r in typed.where(F.col(column).isNotNull()).select(column).distinct().collect()}


def _days_in(table: DataFrame | None, days: list[date]) -> set[date]:
    """Business dates among `days` that hold rows in a table partitioned by business_date
    (from the Delta log's file list: no data is read)."""
    if table is None or not days:
        return set()
    files = table.where(isin("business_date", days)).inputFiles()
    return {d for d in days if any(f"business_date={d.isoformat()}" in f for f in files)}


def _write_bronze(
    spark: SparkSession, lake: LakeLayout, spec: FeedSpec, batch: list[Delivery], ctx: ops.RunContext,
    typed: TypedCopy,
) -> tuple[list[Delivery], list[tuple[Delivery, str, str, str]], TypedFiles | None]:
    """Read, verify, split and type the batch's files in one pass and replace their days in bronze.

    A file failing its control-line checks aborts the write; the whole batch is then verified
    (without decoding), the failed deliveries are dropped and the rest written again.
    Returns the deliveries written, the failures (delivery, file name, message, check) and the
    files of their typed and structurally rejected records (`write_bronze`).
    """
    failed: list[tuple[Delivery, str, str, str]] = []
    while batch:
        try:
            copied = write_bronze(spark, batch, spec, lake.bronze(spec.feed), ctx.run_id, typed)
            return batch, failed, copied
        except Exception as exc:  # noqa: BLE001 - a failed file check surfaces as a Spark job failure
            if failed_check(exc) is None:
                raise
        checks = verify_deliveries(spark, batch)
        keep = []
        for d in batch:
            bad_files = [c for c in checks[d.delivery_id] if c.check]
            failed += [(d, c.file_name, f"{c.detail} (check {c.check}); delivery not loaded", c.check)
                       for c in bad_files]
            if not bad_files:
                keep.append(d)
        if len(keep) == len(batch):
            raise RuntimeError(f"{spec.feed}: a file failed its checks while read but passed on verification")
        batch = keep
    return batch, failed, None


def _incremental(spec: FeedSpec, reloaded: set[date]) -> bool:
    """Whether the batch merges into silver (first deliveries of event days) rather than
    rebuilding partitions from bronze (re-deliveries; bills and tickets, whose later versions
    supersede earlier ones across partitions; snapshots stand alone either way)."""
    return spec.kind == "event" and spec.feed != "ticket" and not reloaded


def _other_versions(bronze: DataFrame, spec: FeedSpec, touched: set, batch_days: list[date]) -> DataFrame:
    """Bronze rows of other deliveries that can hold a version of a record in the touched partitions."""
    outside = ~isin("business_date", batch_days) & F.col("reject_reason").isNull()
    if spec.kind == "snapshot" or not touched:  # a snapshot day stands alone
        return bronze.where(F.lit(False))
    lo = min(touched)
    if spec.kind == "monthly" or spec.feed == "ticket":  # corrections and ticket updates come any time later
        return bronze.where(outside & (F.col("business_date") >= lo))
    hi = max(touched) + timedelta(days=LATE_DAYS)  # events arrive at most 3 days late
    return bronze.where(outside & F.col("business_date").between(lo, hi))


def _valid(bronze: DataFrame) -> DataFrame:
    """Bronze rows that passed the structural checks (the others carry their reject reason)."""
    if "reject_reason" not in bronze.columns:  # bronze written before rejects were kept there
        return bronze
    return bronze.where(F.col("reject_reason").isNull())


def _valid_in_memory(path: str, days: list[date], deliveries: list[str]):
    """`_valid` of a batch's bronze rows (`days`, `deliveries`) read through delta-rs into an Arrow
    table: for a small batch, its bronze checks without a Spark job (a filtered Delta scan in
    Spark is two: its files listed from the log, then read; 0.3-0.9 s for a small feed)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    where = ds.field("business_date").isin(pa.array(days, pa.date32())) & ds.field("delivery_id").isin(
        pa.array(deliveries, pa.string()))
    if delta_rs.column_type(path, "reject_reason") is not None:  # (bronze written before rejects were kept there)
        where = where & ds.field("reject_reason").is_null()
    return delta_rs.read(path, filter=where)


def _typed(bronze: DataFrame, spec: FeedSpec, files: FileIndex | None = None) -> DataFrame:
    return with_partition_date(type_and_validate(_valid(bronze), spec, files), spec)


def _read_copy(spark: SparkSession, schema: str, paths: list[str]) -> DataFrame:
    return spark.read.schema(schema).parquet(*paths) if paths else spark.createDataFrame([], schema)


def _read_typed(spark: SparkSession, spec: FeedSpec, paths: list[str]) -> DataFrame:
    """The records the reading tasks typed (`TypedCopy`), as `_typed` gives them from bronze."""
    return with_partition_date(_read_copy(spark, typed_schema(spec, numbered=True), paths), spec)


def _structural(spark: SparkSession, batch_rows: DataFrame, copied: TypedFiles | None,
                files: FileIndex) -> DataFrame:
    """The batch's structurally rejected lines (`STRUCTURAL_SCHEMA`): from the reading tasks' copy
    when they wrote one, else from bronze."""
    if copied is not None:
        return _read_copy(spark, STRUCTURAL_SCHEMA, copied.rejects)
    return batch_rows.where(F.col("reject_reason").isNotNull()).select(
        "business_date", files.number(F.col("source_file")).alias("_file"), "line_no", *REJECT_COLUMNS)


def _files_of(rows: DataFrame) -> list[tuple[str, str]]:
    """(source_file, delivery_id) of the files bronze `rows` come from."""
    return [(r[0], r[1]) for r in rows.select("source_file", "delivery_id").distinct().collect()]


def _existing_versions(silver: DataFrame, spec: FeedSpec, part_col: str, days: list[date]) -> DataFrame:
    """The stored version of each key in silver partitions `days`: key, its lineage, its partition."""
    key = list(spec.key)
    latest = F.max(F.struct("business_date", "source_file", "line_no", part_col))
    return (
        silver.where(isin(part_col, days)).groupBy(*key).agg(latest.alias("_e"))
        .select(*key, *[F.col(f"_e.{c}").alias(f"_e_{c}")
                        for c in ("business_date", "source_file", "line_no", part_col)])
    )


def _against_stored(typed: DataFrame, spec: FeedSpec, part_col: str, existing: DataFrame | None,
                    files: FileIndex) -> DataFrame:
    """Batch winners (numbered by `files`) compete with the version silver holds: a stored later
    version makes the batch record a duplicate; an earlier one is superseded (`_supersedes`)."""
    if existing is None:
        return typed.withColumn("_supersedes", F.lit(False)).withColumn("_e_part", F.lit(None).cast("date"))
    joined = typed.join(existing, list(spec.key), "left")
    mine = F.struct(F.col("business_date"), files.source_file(), F.col("line_no"))
    stored = F.struct("_e_business_date", "_e_source_file", "_e_line_no")
    stored_present = F.col("_e_business_date").isNotNull()
    loses = F.col("is_winner") & stored_present & (stored >= mine)
    return (
        joined.withColumn("_supersedes", F.col("is_winner") & stored_present & (stored < mine))
        .withColumn("is_winner", F.col("is_winner") & ~loses)
        .withColumn("_e_part", F.col(f"_e_{part_col}"))
        .drop("_e_business_date", "_e_source_file", "_e_line_no", f"_e_{part_col}")
    )


def _laid_out(silver_new: DataFrame, spec: FeedSpec, part_col: str, counted: list, incremental: bool,
              ) -> tuple[DataFrame, bool]:
    """The batch's silver rows arranged for their write, and whether Delta's optimized write is still
    to lay them out. The rows sit spread by key (the dedup's shuffle); with the loaded count of each
    partition value known, `delta.laid_out` shuffles only the values too small to stay where they
    are. It is not known when other deliveries' versions were merged in (a rebuild from bronze)."""
    if not (incremental or spec.kind == "snapshot"):
        return silver_new, True
    per_part: dict = defaultdict(int)
    for r in counted:
        if r["outcome"] == "loaded":
            per_part[r["_part"]] += r["count"]
    return delta.laid_out(silver_new, part_col, per_part, list(spec.key)), False


class Holders:
    """Which subscription holds each number on each day (`holders_by_day` of silver's snapshots),
    built once per set of snapshot days for the feeds of an ingest that map numbers, and kept in
    memory until `release` (`ingest` releases them before it loads the subscriber feed).

    At a million subscribers the holders of a day took 2.7 s to build from the snapshot, and each
    of the six number-keyed feeds built them again. Up to BROADCAST_ROWS rows, every task gets them
    whole (a broadcast join: no shuffle of the feed's records); above, the join shuffles the
    records only, the cached holders being hashed by day and number already."""

    #: about 80 bytes a row in a broadcast: 160 MB held by the driver and each executor at most
    BROADCAST_ROWS = 2_000_000

    def __init__(self, spark: SparkSession, lake: LakeLayout):
        self._spark, self._lake = spark, lake
        self._built: dict[frozenset, tuple[DataFrame, DataFrame]] = {}  # days -> (holders, as joined)
        self._persisted: set[frozenset] = set()  # the days whose holders are built from the snapshot and cached
        self._snapshot_days: frozenset[date] | None = None

    def on(self, days: set[date]) -> DataFrame:
        """The holders of `days` (of those with a snapshot: feeds whose days differ only by days
        without one share them). Taken from the cached holders of more days when some are (a
        ticket's days within the CDRs' days: no second build from the snapshot)."""
        if self._snapshot_days is None:
            stored = delta_rs.partition_values(self._lake.silver("subscriber"), "snapshot_date")
            if stored is None:
                raise RuntimeError("msisdn-keyed feeds need the silver subscriber snapshot; load `subscriber` first")
            self._snapshot_days = frozenset(stored)
        key = frozenset(days) & self._snapshot_days
        if key not in self._built:
            wider = next((built for built in self._built if key < built and built in self._persisted), None)
            if wider is not None:
                holders = self._built[wider][0].where(isin("snapshot_date", key))
            else:
                subscribers = self._spark.read.format("delta").load(self._lake.silver("subscriber"))
                holders = holders_by_day(subscribers.where(isin("snapshot_date", key)))
                holders = holders.persist(StorageLevel.MEMORY_AND_DISK)
                self._persisted.add(key)
            self._built[key] = holders, F.broadcast(holders) if holders.count() <= self.BROADCAST_ROWS else holders
        return self._built[key][1]

    def release(self) -> None:
        for days in self._persisted:
            self._built[days][0].unpersist()
        self._built.clear()
        self._persisted.clear()
        self._snapshot_days = None


def load_feed(
    spark: SparkSession,
    lake: LakeLayout,
    spec: FeedSpec,
    batch: list[Delivery],
    ctx: ops.RunContext,
    holders: Holders,
    on_record: set[date] = frozenset(),
) -> FeedLoad:
    """Load one feed's deliveries: bronze, silver, quarantine, accounting. `holders`: the number
    holders shared by the feeds of an ingest. `on_record`: the feed's days with a loaded delivery
    in ops/deliveries (what the batch's deliveries of them replace)."""
    started = ops.utcnow()
    part_col, _ = partition_date(spec)
    bronze_path = lake.bronze(spec.feed)
    dq_rows: list[dict] = []

    previous = delta.read(spark, bronze_path)
    stored = delta.read(spark, lake.silver(spec.feed))
    all_days = sorted({d.business_date for d in batch})
    # A day is reloaded when bronze holds rows of it or a delivery of it is on record: a try of this
    # batch killed after its bronze commit has already replaced the earlier delivery's bronze rows
    # (with none at all, when the re-delivery is empty), but not yet silver or the delivery log.
    reloaded = _days_in(previous, all_days) | (set(all_days) & set(on_record))
    incremental = _incremental(spec, reloaded)
    replaced_parts: set = set()
    if reloaded and spec.kind != "snapshot":  # partitions the replaced delivery's records sit in
        replaced_parts = _partition_values(
            _typed(previous.where(isin("business_date", sorted(reloaded))), spec)
            .where(F.col("reject_reason").isNull()), part_col)
        if stored is not None:  # the same, when bronze no longer has them
            replaced_parts |= _partition_values(stored.where(isin("business_date", sorted(reloaded))), part_col)

    files = FileIndex((source_file(d, e.file_name), d.delivery_id) for d in batch for e in d.entries)
    copy = TypedCopy(lake.typed_copy(spec.feed), files)
    with stage("read+bronze", spec.feed):
        batch, failed, copied = _write_bronze(spark, lake, spec, batch, ctx, copy)
    faults.point("bronze")
    if not batch:
        clear(copy.folder)
        return FeedLoad([], failed)
    batch_days = sorted({d.business_date for d in batch})
    ids = [d.delivery_id for d in batch]
    bronze = spark.read.format("delta").load(bronze_path)
    batch_rows = bronze.where(isin("business_date", batch_days) & isin("delivery_id", ids))
    lines = sum(e.row_count for d in batch for e in d.entries)  # as the control files declare, now verified
    with stage("bronze_checks", spec.feed):
        valid = _valid(batch_rows)  # a small batch's rows read without Spark; in Spark if pandas would differ
        checked = _valid_in_memory(bronze_path, batch_days, ids) if gx.fits_in_memory(lines) else valid
        dq_rows += gx.enforce(checked, f"bronze_{spec.feed}", ctx.run_id, batch_days[-1], rows_at_most=lines,
                              in_spark=valid)

    with stage("silver", spec.feed):
        # scope: partitions read (snapshot days for the mapping, stored versions); touched: written.
        typed = _read_typed(spark, spec, copied.records) if copied is not None else _typed(batch_rows, spec, files)
        if spec.kind == "snapshot":
            scope = touched = set(batch_days)
        elif incremental:  # the delivery window; what is written is known once the batch is counted
            lo = batch_days[0] - timedelta(days=LATE_DAYS)
            scope = {lo + timedelta(days=i) for i in range((batch_days[-1] - lo).days + 1)}
        else:
            scope = touched = (_partition_values(typed.where(F.col("reject_reason").isNull()), part_col)
                               | replaced_parts)
            others = _other_versions(bronze, spec, touched, batch_days)
            files = files.extended(_files_of(others))  # the batch's records keep their numbers
            typed = typed.unionByName(_typed(others, spec, files))
        if spec.msisdn_field:
            typed = map_to_subscribers(typed, holders.on(scope), spec)
        # only quarantined records keep their line: the rest need not carry it through the dedup
        typed = latest_version_wins(
            typed.withColumn("raw_line", F.when(F.col("reject_reason").isNotNull(), F.col("raw_line"))), spec)
        if incremental:
            existing = (_existing_versions(stored, spec, part_col, sorted(scope))
                        if stored is not None else None)
            typed = _against_stored(typed, spec, part_col, existing, files)
        with uncompressed_cache(spark):
            typed = typed.withColumn("outcome", outcome()).persist(StorageLevel.MEMORY_AND_DISK)

        batch_records = typed.where(isin("business_date", batch_days)) if not incremental else typed
        structural = _structural(spark, batch_rows, copied, files)
        counted = (
            structural.select("_file", F.lit("quarantined").alias("outcome"), F.lit(None).cast("date").alias("_part"),
                              F.lit(False).alias("_supersedes"), F.lit(None).cast("date").alias("_e_part"))
            .unionByName(batch_records.select(
                "_file", "outcome", F.when(F.col("outcome") == "loaded", F.col(part_col)).alias("_part"),
                F.col("_supersedes") if incremental else F.lit(False).alias("_supersedes"),
                F.col("_e_part") if incremental else F.lit(None).cast("date").alias("_e_part")))
            .groupBy("_file", "outcome", "_part", "_supersedes", "_e_part")
            .count()
            .collect()
        )
        if incremental:
            touched = {r["_part"] for r in counted if r["_part"] is not None}
            touched |= {r["_e_part"] for r in counted if r["_supersedes"] and r["_e_part"] is not None}
        supersedes = any(r["_supersedes"] for r in counted)

        kept = [part_col, *spec.field_names] + (["subscriber_id"] if spec.msisdn_field else [])
        silver_cols = [F.col(c) for c in kept] + files.lineage()  # LINEAGE last, as silver's columns
        if incremental:
            silver_new = typed.where(F.col("is_winner")).select(*silver_cols)
        else:
            silver_new = typed.where(F.col("is_winner") & isin(part_col, sorted(touched))).select(*silver_cols)
    if touched:
        with stage("silver_checks", spec.feed):
            # the batch's share of it; all of it unless other deliveries' versions were merged in
            loaded = sum(r["count"] for r in counted if r["outcome"] == "loaded")
            whole = incremental or spec.kind == "snapshot"
            dq_rows += gx.enforce(silver_new, f"silver_{spec.feed}", ctx.run_id, batch_days[-1], rows=loaded,
                                  rows_at_most=loaded if whole else None)

    # The quarantine is written before silver: `typed` read silver (the stored versions), and a
    # write to silver invalidates every cached plan that read it, so after the silver write the
    # rejects would be typed, mapped and deduplicated again from bronze. A batch without rejects
    # whose days were never loaded (no bronze, so no quarantine rows either) has nothing to replace.
    rejected = sum(r["count"] for r in counted if r["outcome"] == "quarantined")
    if rejected or reloaded or delta_rs.table(lake.quarantine) is None:
        with stage("quarantine", spec.feed):
            rejects = structural.select(*files.lineage(), *REJECT_COLUMNS).unionByName(
                batch_records.where(F.col("outcome") == "quarantined").select(*files.lineage(), *REJECT_COLUMNS)
            )
            quarantine = rejects.select(F.lit(spec.feed).alias("feed"), *rejects.columns,
                                        F.lit(ctx.run_id).alias("run_id")).select(*QUARANTINE_COLUMNS)
            replaced = f"feed = {delta.sql_literal(spec.feed)} AND " + delta.in_predicate("business_date", batch_days)
            delta.replace_where(quarantine, lake.quarantine, replaced, ["feed", "business_date"], rows_at_most=rejected)

    if touched:
        # on record before the commit: a run killed after it still has its rollups rebuild these days
        # (rebuilding a day whose silver did not change after all costs a rebuild, nothing else)
        ops.log_silver_changes(lake, ctx.run_id, {spec.feed: touched})
        with stage("silver_write", spec.feed):
            path = lake.silver(spec.feed)
            if incremental and stored is not None and supersedes:
                key = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
                delta.upsert(silver_new, path, f"t.{delta.in_predicate(part_col, touched)} AND {key}",
                             properties=SILVER_STATISTICS)
            else:
                rows, optimize = _laid_out(silver_new, spec, part_col, counted, incremental)
                if not incremental or stored is None:
                    delta.replace_where(rows, path, delta.in_predicate(part_col, touched), [part_col],
                                        optimize_write=optimize, properties=SILVER_STATISTICS)
                else:
                    delta.append(rows, path, [part_col], optimize_write=optimize, properties=SILVER_STATISTICS)
        faults.point("silver")
    typed.unpersist()
    clear(copy.folder)

    per_file: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in counted:
        per_file[files.names[r["_file"]]][r.outcome] += r["count"]
    rows = []
    for d in batch:
        for e in d.entries:
            name = source_file(d, e.file_name)
            counts = dict(per_file.get(name, {}))
            counts["read"] = e.row_count  # verified equal to the lines read
            accounted = sum(counts.get(k, 0) for k in ("loaded", "quarantined", "duplicate"))
            if accounted != counts["read"]:
                raise AccountingError(
                    f"{name}: read {counts['read']} records but accounted for {accounted} "
                    f"(loaded + quarantined + duplicate): {counts}"
                )
            note = f"; ignored unlisted files {', '.join(d.unlisted_files)}" if d.unlisted_files else ""
            rows.append(_row(ctx, d, e.file_name, started, "SUCCESS", counts, f"loaded{note}"))
    return FeedLoad(batch, failed, rows, dq_rows)
