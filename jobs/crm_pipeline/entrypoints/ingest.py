"""`crm ingest`: load every complete delivery of a landing zone into bronze and silver."""

from __future__ import annotations

import argparse

from crm_pipeline import ops
from crm_pipeline.entrypoints.common import (
    add_landing_arguments,
    add_run_arguments,
    check_landing,
    progress,
    setup_logging,
)
from crm_pipeline.settings import LakeLayout, SparkSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_landing_arguments(parser)
    parser.add_argument("--feeds", help="comma-separated feeds (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every delivery loaded; 1 when any failed its checks (the others still load)."""
    setup_logging(args.verbose)
    check_landing("ingest", args.landing)
    from crm_pipeline.ingest.load import ingest
    from crm_pipeline.spark import build_session

    ctx = ops.RunContext(args.run_id or ops.new_run_id(), args.dag_id, args.task_id or "ingest")
    spark = build_session(SparkSettings.from_env())
    result = ingest(
        spark,
        args.landing,
        LakeLayout(str(args.lake)),
        ctx,
        feeds=args.feeds.split(",") if args.feeds else None,
        date_from=args.date_from,
        date_to=args.date_to,
        progress=progress,
    )
    print_summary(result)
    return 0 if result.ok else 1


def print_summary(result) -> None:
    totals = result.totals_by_feed()
    progress(f"run {result.run_id}")
    progress(f"{'feed':<11}{'files':>7}{'read':>13}{'loaded':>13}{'quarantined':>13}{'duplicates':>12}{'failed':>8}")
    for feed, t in totals.items():
        progress(
            f"{feed:<11}{t['files']:>7}{t['rows_read']:>13,}{t['rows_loaded']:>13,}"
            f"{t['rows_quarantined']:>13,}{t['rows_duplicate']:>12,}{t['failed_files']:>8}"
        )
