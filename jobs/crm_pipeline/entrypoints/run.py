"""`crm run`: landing zone -> published warehouse tables, every layer, in one Spark session."""

from __future__ import annotations

import argparse
from pathlib import Path

from crm_pipeline import ops
from crm_pipeline.entrypoints.common import (
    add_landing_arguments,
    add_run_arguments,
    check_landing,
    progress,
    setup_logging,
)
from crm_pipeline.settings import LakeLayout, SparkSettings

DEFAULT_WAREHOUSE = "duckdb:///var/warehouse/warehouse.duckdb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_landing_arguments(parser)
    parser.add_argument("--warehouse", default=DEFAULT_WAREHOUSE,
                        help=f"warehouse URL; duckdb:///path (default {DEFAULT_WAREHOUSE})")
    parser.add_argument("--demo-key", action="store_true",
                        help="allow the labelled demo HMAC key when CRM_MSISDN_HMAC_KEY is unset")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    check_landing("run", args.landing)
    from crm_pipeline.settings import msisdn_hmac_key

    key = msisdn_hmac_key(allow_demo=args.demo_key)
    from crm_pipeline.spark import build_session

    spark = build_session(SparkSettings.from_env())
    ctx = ops.RunContext(args.run_id or ops.new_run_id(), args.dag_id, args.task_id or "run")
    return run_pipeline(spark, args.landing, LakeLayout(str(args.lake)), args.warehouse, ctx, key,
                        args.date_from, args.date_to)


def run_pipeline(spark, landing: str | Path, lake: LakeLayout, warehouse: str, ctx: ops.RunContext, key: str,
                 date_from=None, date_to=None) -> int:
    """Ingest, roll up, analyse every complete month, train the churn models they allow, rescore the
    months a new model may score, publish. Exit 1 if a delivery failed."""
    from crm_pipeline.entrypoints.ingest import print_summary
    from crm_pipeline.ingest.load import ingest
    from crm_pipeline.pipeline.churn import train_step
    from crm_pipeline.pipeline.monthly import analyse, analytics_settings
    from crm_pipeline.pipeline.rollups import build_daily_rollups
    from crm_pipeline.publish.publish import gold_months, publish

    result = ingest(spark, landing, lake, ctx, date_from=date_from, date_to=date_to, progress=progress)
    print_summary(result)
    build_daily_rollups(spark, lake, ctx, key, progress=progress)
    settings = analytics_settings()
    analyse(spark, lake, ctx, settings, key, progress=progress)
    if train_step(spark, lake, ctx, settings, progress=progress):
        analyse(spark, lake, ctx, settings, key, rescore=True, progress=progress)
    publish(lake, warehouse, gold_months(lake), progress=progress)
    return 0 if result.ok else 1
