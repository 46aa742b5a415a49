"""Run bookkeeping: run ids, the per-file accounting rows (crm_ops.pipeline_runs), the delivery log,
and the record of every failed task (exit codes: crm_pipeline.errors)."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone

from crm_pipeline.errors import PipelineError, TaskFailed, UsageError
from crm_pipeline.feeds import table_spec
from crm_pipeline.io import delta_rs
from crm_pipeline.settings import LakeLayout


log = logging.getLogger(__name__)


def new_run_id(prefix: str = "crm") -> str:
    return f"{prefix}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class RunContext:
    """Who is running: the run id, and the Airflow DAG/task (or `cli`)."""

    run_id: str
    dag_id: str = "cli"
    task_id: str = "ingest"


def write_pipeline_runs(lake: LakeLayout, rows: list[dict]) -> None:
    """Append this run's accounting rows (ops history grows by one run's rows per run)."""
    append_rows_arrow(lake, "pipeline_runs", rows)


def step_row(ctx: RunContext, started: datetime, message: str, business_date: date | None = None,
             status: str = "SUCCESS") -> dict:
    """The crm_ops.pipeline_runs row of a step that reads no delivery file (rollups, analyse, train,
    publish, or a failed task): no feed or file, zero record counts, what happened in `message`."""
    return dict(
        run_id=ctx.run_id, dag_id=ctx.dag_id, task_id=ctx.task_id, feed=None, business_date=business_date,
        source_file=None, delivery_id=None, started_at=started, finished_at=utcnow(), status=status,
        rows_read=0, rows_loaded=0, rows_quarantined=0, rows_duplicate=0, message=message,
    )


def record_step(lake: LakeLayout, ctx: RunContext, started: datetime, message: str,
                business_date: date | None = None) -> None:
    """Append the one crm_ops.pipeline_runs row of a successful step."""
    write_pipeline_runs(lake, [step_row(ctx, started, message, business_date)])


def append_rows_arrow(lake: LakeLayout, table: str, rows: list[dict], replacing: str | None = None) -> None:
    """Append rows to an ops table whose schema is `schemas/tables/<table>.json` (converted by
    pyspark, no session needed), through delta-rs; with `replacing` (an SQL predicate every row
    matches), in place of the rows it matches, in the same commit."""
    from pyspark.sql.pandas.types import to_arrow_schema

    spec = table_spec(table)
    rows = [{c: r.get(c) for c in spec.column_names} for r in rows]
    schema = to_arrow_schema(spec.spark_schema())
    if replacing is None:
        delta_rs.append_rows(lake.ops(table), rows, schema)
    elif rows:
        delta_rs.replace_rows(lake.ops(table), rows, schema, replacing)


_NUMBER = re.compile(r"(?<!\d)(?:\+?86)?(1\d{2})\d{6}(\d{2})(?!\d)")


def failure_message(exc: BaseException, limit: int = 2000) -> str:
    """What failed, for crm_ops and the console: the exception's own message (a JVM error's first
    lines, not its stack trace), with anything shaped like a mobile number masked."""
    text = str(exc).strip() or type(exc).__name__
    first = [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("at ")][:3]
    text = " ".join(ln.strip() for ln in first)
    if not isinstance(exc, PipelineError):
        text = f"{type(exc).__name__}: {text}"
    text = _NUMBER.sub(lambda m: f"{m.group(1)}******{m.group(2)}", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def record_failure(lake: LakeLayout, ctx: RunContext, started: datetime, message: str,
                   dq_rows: list[dict] | None = None, business_date: date | None = None) -> None:
    """Put a failed task on record: its data-quality results and a FAILED pipeline_runs row.
    Never raises: a failure to record is logged next to the original error."""
    try:
        append_rows_arrow(lake, "data_quality", dq_rows or [])
        append_rows_arrow(lake, "pipeline_runs", [step_row(ctx, started, message, business_date, "FAILED")])
    except Exception:  # noqa: BLE001 - the original failure must still surface
        log.exception("could not record the failure of %s/%s in %s", ctx.run_id, ctx.task_id, lake.ops("pipeline_runs"))


@contextmanager
def recorded(lake: LakeLayout, ctx: RunContext, what: str) -> Iterator[None]:
    """Run a task; if it raises, put the failure on record (`record_failure`) and raise TaskFailed
    with a message naming the task and what failed (the table and check, the file, the error)."""
    started = utcnow()
    try:
        yield
    except (TaskFailed, UsageError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - every failure goes on record
        message = f"{what} failed: {failure_message(exc)}"
        # the caller reports the TaskFailed (the command line prints it once); -v adds the traceback
        log.info(message, exc_info=True)
        record_failure(lake, ctx, started, message, getattr(exc, "rows", None))
        raise TaskFailed(message) from exc


def loaded_deliveries(lake: LakeLayout) -> dict[tuple[str, date], str]:
    """(feed, business date) -> delivery id currently loaded in bronze (the latest LOADED entry of
    the delivery log)."""
    import pyarrow.compute as pc

    entries = delta_rs.read(lake.ops("deliveries"), ["feed", "business_date", "delivery_id", "logged_at"],
                            pc.field("status") == "LOADED")
    if entries is None:
        return {}
    out: dict[tuple[str, date], str] = {}
    for r in entries.sort_by([("logged_at", "ascending"), ("delivery_id", "ascending")]).to_pylist():
        out[(r["feed"], r["business_date"])] = r["delivery_id"]  # later entries win
    return out


def log_deliveries(lake: LakeLayout, rows: list[tuple[str, date, str, str, str]]) -> None:
    """Record (feed, business_date, delivery_id, run_id, status) for deliveries this run handled."""
    import pyarrow as pa

    now = utcnow()
    schema = pa.schema([("feed", pa.string()), ("business_date", pa.date32()), ("delivery_id", pa.string()),
                        ("run_id", pa.string()), ("status", pa.string()), ("logged_at", pa.timestamp("us"))])
    delta_rs.append_rows(lake.ops("deliveries"), [dict(zip(schema.names, (*r, now))) for r in rows], schema)


def write_data_quality(lake: LakeLayout, rows: list[dict]) -> None:
    """Append this run's data-quality results."""
    append_rows_arrow(lake, "data_quality", rows)


def log_silver_changes(lake: LakeLayout, run_id: str, changed: dict[str, set[date]]) -> None:
    """Record which silver partitions a run rewrote, so rollups recompute exactly those days."""
    import pyarrow as pa

    now = utcnow()
    rows = [dict(feed=feed, partition_date=day, run_id=run_id, changed_at=now)
            for feed, days in sorted(changed.items()) for day in sorted(days)]
    schema = pa.schema([("feed", pa.string()), ("partition_date", pa.date32()), ("run_id", pa.string()),
                        ("changed_at", pa.timestamp("us"))])
    delta_rs.append_rows(lake.ops("silver_changes"), rows, schema)
