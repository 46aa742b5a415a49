"""`crm ingest`: load every complete delivery of a landing zone into bronze and silver."""

from __future__ import annotations

import argparse

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
from crm_pipeline.errors import EXIT_FAILED, EXIT_OK, UsageError
from crm_pipeline.settings import LakeLayout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_landing_arguments(parser)
    parser.add_argument("--feeds", help="comma-separated feeds (default: all)")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_run_arguments(parser)


def check_feeds(text: str | None) -> list[str] | None:
    """The --feeds list; UsageError naming any feed the contract does not know."""
    if not text:
        return None
    from crm_pipeline.feeds import load_feeds

    feeds = [f.strip() for f in text.split(",") if f.strip()]
    unknown = sorted(set(feeds) - load_feeds().keys())
    if unknown or not feeds:
        raise UsageError(f"unknown feeds {unknown or text!r}; known: {', '.join(load_feeds())}")
    return feeds


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every delivery loaded; 1 when any failed its checks (the others still load)."""
    setup_logging(args.verbose)
    check_landing(args.landing)
    feeds = check_feeds(args.feeds)
    from crm_pipeline.ingest.load import ingest

    lake, ctx = LakeLayout(str(args.lake)), run_context(args, "ingest")
    spark = spark_session(lake, ctx)
    from crm_pipeline.quality.summary import print_data_quality_summary

    try:
        with ops.recorded(lake, ctx, "ingest"):
            result = ingest(spark, args.landing, lake, ctx, feeds=feeds, date_from=args.date_from,
                            date_to=args.date_to, progress=progress)
        print_summary(result)
    finally:
        print_data_quality_summary(lake, ctx.run_id, progress)
    return EXIT_OK if result.ok else EXIT_FAILED


def print_summary(result) -> None:
    totals = result.totals_by_feed()
    progress(f"run {result.run_id}")
    progress(f"{'feed':<11}{'files':>7}{'read':>13}{'loaded':>13}{'quarantined':>13}{'duplicates':>12}{'failed':>8}")
    for feed, t in totals.items():
        progress(
            f"{feed:<11}{t['files']:>7}{t['rows_read']:>13,}{t['rows_loaded']:>13,}"
            f"{t['rows_quarantined']:>13,}{t['rows_duplicate']:>12,}{t['failed_files']:>8}"
        )
