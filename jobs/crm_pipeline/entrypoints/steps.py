"""`crm rollup`, `crm analyse`, `crm publish`: the steps of `crm run`, one Spark job each (Airflow tasks)."""

from __future__ import annotations

import argparse

from crm_pipeline import ops
from crm_pipeline.entrypoints.common import (
    add_run_arguments,
    iso_date,
    progress,
    run_context,
    setup_logging,
    spark_session,
    year_month,
    year_months,
)
from crm_pipeline.errors import EXIT_OK, TaskFailed
from crm_pipeline.publish.warehouse import check_warehouse
from crm_pipeline.quality.summary import print_data_quality_summary
from crm_pipeline.settings import LakeLayout


def _common(parser: argparse.ArgumentParser, warehouse: bool = False) -> None:
    parser.add_argument("--lake", required=True, help="Delta Lake root")
    if warehouse:
        from crm_pipeline.entrypoints.run import DEFAULT_WAREHOUSE

        parser.add_argument("--warehouse", default=DEFAULT_WAREHOUSE, help="warehouse URL: duckdb:///path or postgresql://user@host/db")
    parser.add_argument("--demo-key", action="store_true", help="allow the labelled demo HMAC key")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_run_arguments(parser)


def add_rollup_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--from", dest="rebuild_from", type=iso_date,
                        help="also rebuild every day from this date on, changed or not (after rotating the "
                             "msisdn HMAC key: the contact rollups hold keyed numbers; docs/runbook.md)")


def add_analyse_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--month", dest="months", action="extend", type=year_months,
                        help="month to (re)build, YYYY-MM; repeatable or comma-separated (default: every "
                             "complete month). A named month that is not complete fails the step, naming what it "
                             "waits for")
    parser.add_argument("--require-month", dest="required", action="append", type=year_month, default=[],
                        help="build every complete month (so restated ones are rebuilt), but fail, naming what "
                             "it waits for, unless this month is complete: a scheduled run's month; repeatable")
    parser.add_argument("--rescore", action="store_true",
                        help="rebuild only the months whose newest honest churn model differs from the one "
                             "that scored them (after `crm train`)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--retrain", nargs="?", const=True, default=False, type=_yes_no, metavar="yes|no",
                        help="fit every training window again, even those the registry already has")


def _yes_no(text: str) -> bool:
    if text.lower() in ("yes", "true"):
        return True
    if text.lower() in ("no", "false"):
        return False
    raise argparse.ArgumentTypeError(f"expected yes or no, got {text!r}")


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, warehouse=True)
    parser.add_argument("--month", dest="months", action="append", type=year_month,
                        help="month to publish, YYYY-MM; repeatable (default: every month in gold)")


def add_maintain_arguments(parser: argparse.ArgumentParser) -> None:
    from crm_pipeline.maintenance import GROUPS, MIN_RETAIN_DAYS

    _common(parser)
    parser.add_argument("--tables", choices=GROUPS, action="append",
                        help="which tables: silver (bronze, silver, quarantine, daily rollups) or gold (gold marts, "
                             "ops); repeatable (default: both)")
    parser.add_argument("--retain-days", type=int, default=30,
                        help=f"days of Delta history kept for time travel (default 30, at least {MIN_RETAIN_DAYS})")
    parser.add_argument("--docs-days", type=int, default=90,
                        help="days of Data Docs and validation results kept (default 90)")


def maintain(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from crm_pipeline.errors import UsageError
    from crm_pipeline.maintenance import GROUPS, check_retention, optimize_and_vacuum, prune_data_docs

    check_retention(args.retain_days)
    if args.docs_days < 1:
        raise UsageError(f"--docs-days {args.docs_days}: keep at least one day of Data Docs")
    lake, ctx = LakeLayout(args.lake), run_context(args, "maintain")
    spark = spark_session(lake, ctx)
    started = ops.utcnow()
    with ops.recorded(lake, ctx, "maintain"):
        done = []
        for group in args.tables or GROUPS:
            done += optimize_and_vacuum(spark, lake, group, args.retain_days, progress)
        pruned = prune_data_docs(lake.data_docs, args.docs_days, progress=progress)
        ops.record_step(lake, ctx, started, f"maintained {len(done)} tables: "
                        f"{sum(r['compacted'] for r in done)} files compacted, "
                        f"{sum(r['vacuumed'] for r in done)} removed; Data Docs of {len(pruned)} old runs removed")
    return EXIT_OK


def rollup(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from crm_pipeline.pipeline.rollups import NOTHING_PENDING, build_daily_rollups, pending_days
    from crm_pipeline.settings import msisdn_hmac_key

    key = msisdn_hmac_key(allow_demo=args.demo_key)
    lake, ctx = LakeLayout(args.lake), run_context(args, "rollup")
    if not pending_days(lake, args.rebuild_from)[0]:  # no Spark session for nothing to do
        progress(NOTHING_PENDING)
        return EXIT_OK
    spark = spark_session(lake, ctx)
    with ops.recorded(lake, ctx, "rollup"):
        build_daily_rollups(spark, lake, ctx, key, progress=progress, rebuild_from=args.rebuild_from)
    return EXIT_OK


def analyse(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from crm_pipeline.pipeline.monthly import (
        analyse as build, analytics_settings, months_to_analyse, nothing_to_analyse,
    )
    from crm_pipeline.settings import msisdn_hmac_key

    key = msisdn_hmac_key(allow_demo=args.demo_key)
    settings = analytics_settings()
    lake, ctx = LakeLayout(args.lake), run_context(args, "analyse")
    what = "rescore" if args.rescore else "analyse"
    with ops.recorded(lake, ctx, what):  # which months, before Spark: a month not complete fails at once
        plan = months_to_analyse(lake, settings, args.months, args.rescore, args.required, progress)
    if not plan[0]:
        nothing_to_analyse(lake, ctx, args.rescore, progress)
        return EXIT_OK
    spark = spark_session(lake, ctx)
    try:
        with ops.recorded(lake, ctx, what):
            build(spark, lake, ctx, settings, key, rescore=args.rescore, progress=progress, plan=plan)
    finally:
        print_data_quality_summary(lake, ctx.run_id, progress)
    return EXIT_OK


def train(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from crm_pipeline.pipeline.churn import nothing_to_train, train_step, training_plan
    from crm_pipeline.pipeline.monthly import analytics_settings

    settings = analytics_settings()
    lake, ctx = LakeLayout(args.lake), run_context(args, "train")
    with ops.recorded(lake, ctx, "train"):  # what to fit, before Spark: with nothing to do it never starts
        plan = training_plan(lake, settings.churn, args.retrain)
        if nothing_to_train(lake, ctx, plan, settings.churn, progress):
            return EXIT_OK
    spark = spark_session(lake, ctx)
    try:
        with ops.recorded(lake, ctx, "train"):
            train_step(spark, lake, ctx, settings, retrain=args.retrain, progress=progress, plan=plan)
    finally:
        print_data_quality_summary(lake, ctx.run_id, progress)
    return EXIT_OK


def publish(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    check_warehouse(args.warehouse)
    from crm_pipeline.publish.publish import gold_months, publish as do_publish, publish_ops_after_failure

    lake, ctx = LakeLayout(args.lake), run_context(args, "publish")
    try:
        with ops.recorded(lake, ctx, "publish"):
            do_publish(lake, args.warehouse, args.months or gold_months(lake), progress=progress, ctx=ctx)
    except TaskFailed:
        publish_ops_after_failure(lake, args.warehouse)
        raise
    return EXIT_OK
