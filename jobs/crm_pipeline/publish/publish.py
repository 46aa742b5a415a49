"""Publish gold and ops tables from the lake to the warehouse, and record restatements."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from deltalake.exceptions import TableNotFoundError

from crm_pipeline import faults
from crm_pipeline.feeds import table_spec
from crm_pipeline.ops import RunContext, append_rows_arrow, new_run_id, step_row, utcnow
from crm_pipeline.progress import track
from crm_pipeline.publish.warehouse import empty_table, open_warehouse
from crm_pipeline.quality.gx import CheckResult, blocking_error, dq_rows
from crm_pipeline.settings import LakeLayout
from crm_pipeline.stages import stage

log = logging.getLogger(__name__)

OPS_TABLES = ("pipeline_runs", "data_quality", "restatements", "publications", "month_inputs")
#: crm_ops tables of the operations view (crm_pipeline.status), computed at each publish
STATUS_TABLES = ("delivery_status", "month_status")


def published_tables() -> list[tuple[str, str, list[str], str]]:
    """(warehouse schema, table, columns, partition column) of every published gold table, from
    schemas/tables; gold-only tables (schema "gold", e.g. churn_features) are not published."""
    from crm_pipeline.pipeline.churn import MODEL_TABLES
    from crm_pipeline.pipeline.marts import MART_TABLES

    specs = [table_spec(name) for name in (*MART_TABLES, *MODEL_TABLES)]
    return [(s.schema, s.table, s.column_names, s.partition) for s in specs if s.schema != "gold"]


#: rows per Arrow batch of every stream the publish reads
BATCH_ROWS = 32_768


def stream(dataset: ds.Dataset, columns: list[str] | None = None, where=None) -> pa.RecordBatchReader:
    """`dataset`'s rows (of `columns`, matching `where`) as a stream of Arrow batches, in memory
    bounded by one Parquet row group (the lake's writer bounds those: Spark's 128 MB blocks) and a
    batch, whatever the size of the month.

    Scanned one row group at a time: a scanner over the whole dataset reads ahead by files and
    row groups as fast as it can decode, so a slow consumer (a warehouse's COPY) would find most of
    the month in memory."""
    columns = list(columns or dataset.schema.names)
    schema = pa.schema([dataset.schema.field(c) for c in columns])

    def batches():
        for fragment in dataset.get_fragments(filter=where):
            for row_group in fragment.split_by_row_group():
                # a dataset of the one row group, so its partition values fill the partition columns
                part = ds.FileSystemDataset([row_group], dataset.schema, fragment.format, fragment.filesystem)
                yield from part.to_batches(columns=columns, filter=where, batch_size=BATCH_ROWS,
                                           batch_readahead=1, fragment_readahead=1)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _delta_dataset(path: str) -> ds.Dataset:
    from deltalake import DeltaTable

    return DeltaTable(path).to_pyarrow_dataset()


def _months(table: pa.Table) -> list[date]:
    return sorted(set(table.column("month").to_pylist()))


def gold_months(lake: LakeLayout) -> list[date]:
    """Every month present in gold subscriber_month (what a full publish covers)."""
    try:
        dataset = _delta_dataset(lake.gold("subscriber_month"))
    except TableNotFoundError:
        return []
    return _months(dataset.to_table(columns=["month"]))


def read_gold_months(lake: LakeLayout, name: str, months: list[date], columns: list[str],
                     partition: str = "month") -> tuple[pa.RecordBatchReader, dict[date, int], int]:
    """The rows of `months` of a gold table as a stream of Arrow batches (never collected whole),
    their number per month (from the Parquet footers) and the Delta version read."""
    from deltalake import DeltaTable

    table = DeltaTable(lake.gold(name))
    dataset = table.to_pyarrow_dataset()
    where = pc.field(partition).isin(pa.array(months, pa.date32()))
    per_month = {m: dataset.count_rows(filter=pc.field(partition) == pa.scalar(m, pa.date32())) for m in months}
    return stream(dataset, columns, where), per_month, table.version()


def publish(
    lake: LakeLayout,
    warehouse_url: str,
    months: list[date],
    progress: Callable[[str], None] = print,
    ctx: RunContext | None = None,
) -> dict:
    """Publish `months` of the gold marts, the ops tables and the restricted contact list; return
    what was published (months, tables, rows of the marts, warehouse).

    With `ctx`, the publish step's own crm_ops.pipeline_runs row is written to the lake before
    the ops tables are copied, so the warehouse shows it.
    """
    started = utcnow()
    wh = open_warehouse(warehouse_url)
    tables = rows = 0
    checks: list[dict] = []
    written: list[dict] = []  # crm_ops.publications rows
    if months:
        with wh.transaction():  # every table of these months, or none
            for schema, name, cols, partition in track(published_tables(), "publish", "tables"):
                with stage("publish", name):
                    try:
                        data, per_month, version = read_gold_months(lake, name, months, cols, partition)
                    except TableNotFoundError:
                        progress(f"publish: gold/{name} not built yet; run `crm analyse` (or `crm train`) first")
                        continue
                    expected = sum(per_month.values())
                    wh.replace_partitions(schema, name, data, partition, months)
                    checks += _reconciled(wh, schema, name, partition, months, expected, ctx)
                    written += [dict(table_name=name, month=m, rows=n, gold_version=version) for m, n in per_month.items()]
                faults.point("publish")
                tables, rows = tables + 1, rows + expected
                progress(f"publish: {schema}.{name} {len(months)} months, {expected:,} rows")
            blocking = blocking_error(checks)
            if blocking is not None:  # rolled back: the warehouse keeps its previous tables
                raise blocking
    with stage("publish", "contact"):
        contact = _latest_contacts(lake)
        if contact is not None:
            wh.replace_table("crm_restricted", "contact", contact)
    if contact is not None:
        progress(f"publish: crm_restricted.contact {contact.num_rows:,} rows -> {wh.where('crm_restricted')}")
    if written:
        run_id = ctx.run_id if ctx is not None else new_run_id("publish")
        append_rows_arrow(lake, "publications", [dict(r, run_id=run_id, warehouse=wh.target.display,
                                                      published_at=utcnow()) for r in written])
    if ctx is not None:
        append_rows_arrow(lake, "data_quality", checks)
        span = f"{months[0]:%Y-%m}..{months[-1]:%Y-%m}" if months else "no month"
        append_rows_arrow(lake, "pipeline_runs", [step_row(
            ctx, started, f"published {span}: {tables} tables, {rows:,} rows to {wh.target.display}",
            months[-1] if months else None)])
    publish_ops(lake, wh)
    views = wh.create_views()
    if views:
        progress(f"publish: views {', '.join(views)}")
    return {"months": list(months), "tables": tables, "rows": rows, "warehouse": wh.target.display}


def _reconciled(wh, schema: str, name: str, partition: str, months: list[date], expected: int,
                ctx: RunContext | None) -> list[dict]:
    """The blocking check `published_<table>: row_count_equals_gold`: the rows of `months` the
    warehouse table now holds (inside the publish transaction) against the gold rows written."""
    held = wh.count_partitions(schema, name, partition, months)
    result = CheckResult("row_count_equals_gold", held == expected, abs(held - expected), "blocking")
    return dq_rows([result], f"published_{name}", ctx.run_id if ctx else "", months[-1])


def publish_ops(lake: LakeLayout, warehouse) -> None:
    """Copy the lake's ops tables (pipeline_runs, data_quality, restatements, publications,
    month_inputs) to crm_ops, with the operations view as of now (delivery_status, month_status)."""
    from crm_pipeline import status

    wh = open_warehouse(warehouse) if isinstance(warehouse, str) else warehouse
    for name in OPS_TABLES:
        with stage("publish", name):
            try:
                dataset = _delta_dataset(lake.ops(name))
                data = _latest_per_key(dataset.to_table(), name) if name in WRITTEN_AT else stream(dataset)
            except TableNotFoundError:  # nothing of that kind so far: the table exists, empty, for BI
                data = empty_table(table_spec(name))
            wh.replace_table("crm_ops", name, data)
    with stage("publish", "status"):
        config = status.load_operations_config()
        now = status.now(config)
        views = {"delivery_status": status.delivery_status(lake, now, status.DAYS, config),
                 "month_status": status.month_status(lake, now, config.timezone)}
        for name in STATUS_TABLES:
            schema = empty_table(table_spec(name)).schema
            wh.replace_table("crm_ops", name, pa.Table.from_pylist(
                [{c: r.get(c) for c in schema.names} for r in views[name]], schema=schema))


#: ops tables a step may append twice under one key, and the column that orders their rows:
#: month_inputs, in a lake written before a month built again in the same run replaced that run's
#: rows of the month; publications, when a publish is retried under its run id after it recorded them
WRITTEN_AT = {"month_inputs": "built_at", "publications": "published_at"}


def _latest_per_key(rows: pa.Table, name: str) -> pa.Table:
    """An ops table (WRITTEN_AT) with one row per key of its definition, the latest written: the
    warehouse refuses two rows under one key."""
    spec = table_spec(name)
    ordered = rows.sort_by([(WRITTEN_AT[name], "descending")])
    seen: set[tuple] = set()
    keep = []
    for i, row in enumerate(ordered.select(list(spec.key)).to_pylist()):
        key = tuple(row.values())
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return ordered.take(keep) if len(keep) < len(ordered) else rows


def publish_ops_after_failure(lake: LakeLayout, warehouse_url: str) -> None:
    """After a failed task: bring crm_ops up to date so the failure shows there; never raises
    (the warehouse may be what failed)."""
    try:
        publish_ops(lake, warehouse_url)
    except Exception:  # noqa: BLE001 - the original failure is what the caller reports
        log.exception("could not publish crm_ops to %s after the failure", warehouse_url)


def _latest_contacts(lake: LakeLayout) -> pa.Table | None:
    """subscriber_id, msisdn, customer_name from the latest subscriber snapshot."""
    from deltalake import DeltaTable

    try:
        table = DeltaTable(lake.silver("subscriber")).to_pyarrow_dataset()
    except TableNotFoundError:
        return None
    days = table.to_table(columns=["snapshot_date"]).column("snapshot_date")
    if len(days) == 0:
        return None
    latest = pc.max(days)
    rows = table.to_table(columns=["subscriber_id", "msisdn", "customer_name"],
                          filter=pc.field("snapshot_date") == latest)
    return rows.sort_by([("subscriber_id", "ascending")])
