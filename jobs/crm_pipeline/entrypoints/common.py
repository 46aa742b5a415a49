"""Argument types and logging shared by the entrypoints."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date, datetime


def _argument_type(parse, expected: str, name: str):
    """An argparse `type` calling `parse`, whose error names the format expected."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from exc

    convert.__name__ = name
    return convert


iso_date = _argument_type(date.fromisoformat, "YYYY-MM-DD", "iso_date")


def _first_of_month(text: str) -> date:
    """YYYY-MM, or the month's first day YYYY-MM-01 (as scripts and the monthly DAG write it)."""
    day = date.fromisoformat(text + "-01" if len(text) == 7 else text)
    if day.day != 1:
        raise ValueError(text)
    return day


#: a month, YYYY-MM (or YYYY-MM-01): `crm report --month`, `crm analyse --require-month`
year_month = _argument_type(_first_of_month, "YYYY-MM", "year_month")
#: one month or several, comma-separated (`crm analyse --month 2026-01,2026-02`)
year_months = _argument_type(lambda text: [_first_of_month(t.strip()) for t in text.split(",") if t.strip()],
                             "YYYY-MM[,YYYY-MM...]", "year_months")
#: a local date and time (`--as-of`)
local_time = _argument_type(datetime.fromisoformat, "YYYY-MM-DD or YYYY-MM-DDTHH:MM", "local_time")


def add_landing_arguments(parser: argparse.ArgumentParser) -> None:
    """--landing, --lake and the business-date range of the deliveries to ingest."""
    parser.add_argument("--landing", required=True,
                        help="landing zone root (<feed>/<YYYYMMDD>/...): local path or file://, s3a://, hdfs:// URI")
    parser.add_argument("--lake", required=True, help="Delta Lake root (local path or Hadoop URI)")
    parser.add_argument("--from", dest="date_from", type=iso_date, help="first business date to ingest (YYYY-MM-DD)")
    parser.add_argument("--to", dest="date_to", type=iso_date, help="last business date to ingest (YYYY-MM-DD)")


def check_landing(landing: str) -> None:
    """UsageError unless the landing zone is a readable directory."""
    from crm_pipeline.errors import UsageError
    from crm_pipeline.ingest.landing import is_directory

    try:
        found = is_directory(landing)
    except (OSError, ValueError) as exc:  # unknown scheme, unreachable file system
        raise UsageError(f"cannot open landing zone {landing}: {exc}") from exc
    if not found:
        raise UsageError(f"landing zone {landing} is not a directory")


def check_lake(lake: str, folder: str, written_by: str) -> None:
    """UsageError unless `lake` is a Hadoop URI or a local folder holding `folder`/ (what a lake
    this pipeline `written_by` has)."""
    from pathlib import Path

    from crm_pipeline.errors import UsageError

    if not (lake.startswith(("s3a://", "hdfs://", "file://")) or Path(lake, folder).is_dir()):
        raise UsageError(f"{lake} is not a lake this pipeline {written_by} (no {folder}/ folder): check --lake")


def run_context(args: argparse.Namespace, task: str):
    from crm_pipeline import ops

    return ops.RunContext(args.run_id or ops.new_run_id(), args.dag_id, args.task_id or task)


def spark_session(lake, ctx):
    """The Spark session of a command; a failure to start it (no Java, no cluster) goes on record."""
    import importlib
    import threading

    from crm_pipeline import ops
    from crm_pipeline.settings import SparkSettings
    from crm_pipeline.spark import build_session

    # GX takes about 2 s to import, which overlaps the JVM's start (about 1 s saved per command).
    # The libraries both import come first, from this thread, so that the two never wait on each other.
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401

    preload = threading.Thread(target=importlib.import_module, args=("great_expectations",), daemon=True)
    preload.start()
    with ops.recorded(lake, ctx, "starting Spark"):
        spark = build_session(SparkSettings.from_env())
    preload.join()
    from crm_pipeline.quality import gx

    gx.keep_results(lake.data_docs)  # after the session: GX must not start one of its own
    return spark


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-id", help="run identifier recorded in crm_ops (default: generated)")
    parser.add_argument("--dag-id", default="cli", help="Airflow DAG id recorded in crm_ops (default: cli)")
    parser.add_argument("--task-id", default=None, help="task id recorded in crm_ops")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def progress(message: str) -> None:
    """A progress line on stdout (above any progress bar: crm_pipeline.progress)."""
    from crm_pipeline.progress import say

    say(message)
