"""`crm run`: landing zone -> published warehouse tables, every layer, in one Spark session."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from crm_pipeline import ops
from crm_pipeline.entrypoints.common import (
    add_landing_arguments,
    add_run_arguments,
    check_landing,
    progress,
    run_context,
    setup_logging,
    spark_session,
)
from crm_pipeline.errors import EXIT_FAILED, EXIT_OK, TaskFailed
from crm_pipeline.publish.warehouse import check_warehouse
from crm_pipeline.settings import LakeLayout

DEFAULT_WAREHOUSE = "duckdb:///var/warehouse/warehouse.duckdb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_landing_arguments(parser)
    parser.add_argument("--warehouse", default=DEFAULT_WAREHOUSE,
                        help=f"warehouse URL: duckdb:///path or postgresql://user@host/db (default {DEFAULT_WAREHOUSE})")
    parser.add_argument("--demo-key", action="store_true",
                        help="allow the labelled demo HMAC key when CRM_MSISDN_HMAC_KEY is unset")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    check_landing(args.landing)
    check_warehouse(args.warehouse)
    from crm_pipeline.settings import msisdn_hmac_key

    key = msisdn_hmac_key(allow_demo=args.demo_key)
    lake, ctx = LakeLayout(str(args.lake)), run_context(args, "run")
    spark = spark_session(lake, ctx)
    return run_pipeline(spark, args.landing, lake, args.warehouse, ctx, key, args.date_from, args.date_to)


def run_pipeline(spark, landing: str | Path, lake: LakeLayout, warehouse: str, ctx: ops.RunContext, key: str,
                 date_from=None, date_to=None) -> int:
    """Ingest, roll up, analyse the complete months whose gold is out of date (`months_out_of_date`:
    new, or built from deliveries since replaced or added, and the months after them), train the
    churn models they allow, rescore the months a new model may score, publish. Return 1 if a
    delivery failed (the rest still loads and is published), else 0. A failed step (a blocking
    data-quality check, a crash) stops the run before anything later is published: it goes on
    record, crm_ops is published, and TaskFailed is raised."""
    from crm_pipeline.entrypoints.ingest import print_summary
    from crm_pipeline.ingest.load import ingest
    from crm_pipeline.pipeline.churn import train_step
    from crm_pipeline.pipeline.monthly import analyse, analytics_settings, months_out_of_date, months_to_analyse
    from crm_pipeline.pipeline.rollups import build_daily_rollups
    from crm_pipeline.publish.publish import gold_months, publish, publish_ops_after_failure
    from crm_pipeline.quality.summary import print_data_quality_summary

    clock = time.monotonic()
    try:
        with ops.recorded(lake, ctx, "ingest"):
            result = ingest(spark, landing, lake, ctx, date_from=date_from, date_to=date_to, progress=progress)
        print_summary(result)
        with ops.recorded(lake, ctx, "rollup"):
            build_daily_rollups(spark, lake, ctx, key, progress=progress)
        settings = analytics_settings()
        with ops.recorded(lake, ctx, "analyse"):
            _, complete = months_to_analyse(lake, settings, progress=progress)
            stale = months_out_of_date(lake, complete)
            if stale and stale.keys() != set(complete):  # why these months, when some are not rebuilt
                first = min(stale)  # every complete month after it is rebuilt too: their windows read it
                progress(f"analyse: {first:%Y-%m} {stale[first]}"
                         + (f", and the {len(stale) - 1} complete month(s) after it" if len(stale) > 1 else ""))
            analyse(spark, lake, ctx, settings, key, progress=progress, plan=(list(stale), complete))
        with ops.recorded(lake, ctx, "train"):
            trained = train_step(spark, lake, ctx, settings, progress=progress)
        if trained:
            with ops.recorded(lake, ctx, "rescore"):
                analyse(spark, lake, ctx, settings, key, rescore=True, progress=progress)
        with ops.recorded(lake, ctx, "publish"):
            published = publish(lake, warehouse, gold_months(lake), progress=progress, ctx=ctx)
    except TaskFailed:
        publish_ops_after_failure(lake, warehouse)
        raise
    finally:
        print_data_quality_summary(lake, ctx.run_id, progress)
    progress(closing_summary(ctx.run_id, result, published, time.monotonic() - clock))
    return EXIT_OK if result.ok else EXIT_FAILED


def closing_summary(run_id: str, ingested, published: dict, seconds: float) -> str:
    """One paragraph a person reads last: what was loaded, rejected and published, and how long it took."""
    totals = ingested.totals_by_feed().values()
    read, loaded, quarantined, duplicates = (sum(t[k] for t in totals) for k in (
        "rows_read", "rows_loaded", "rows_quarantined", "rows_duplicate"))
    months = published["months"]
    span = (f"{len(months)} month(s) {months[0]:%Y-%m}..{months[-1]:%Y-%m}" if months else "no complete month")
    return (f"\nrun {run_id} {'finished' if ingested.ok else 'finished with failed deliveries'} in "
            f"{_duration(seconds)}: {ingested.deliveries('SUCCESS'):,} deliveries loaded, "
            f"{ingested.deliveries('FAILED'):,} failed; {read:,} records read, {loaded:,} loaded, "
            f"{quarantined:,} quarantined, {duplicates:,} duplicates; published {span}: "
            f"{published['tables']} tables, {published['rows']:,} rows to {published['warehouse']}")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
