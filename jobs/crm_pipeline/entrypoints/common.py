"""Argument types and logging shared by the entrypoints."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import date


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from exc


def add_landing_arguments(parser: argparse.ArgumentParser) -> None:
    """--landing, --lake and the business-date range of the deliveries to ingest."""
    parser.add_argument("--landing", required=True,
                        help="landing zone root (<feed>/<YYYYMMDD>/...): local path or file://, s3a://, hdfs:// URI")
    parser.add_argument("--lake", required=True, help="Delta Lake root (local path or Hadoop URI)")
    parser.add_argument("--from", dest="date_from", type=iso_date, help="first business date to ingest (YYYY-MM-DD)")
    parser.add_argument("--to", dest="date_to", type=iso_date, help="last business date to ingest (YYYY-MM-DD)")


def check_landing(command: str, landing: str) -> None:
    from crm_pipeline.ingest.landing import is_directory

    try:
        found = is_directory(landing)
    except (OSError, ValueError) as exc:  # unknown scheme, unreachable file system
        raise SystemExit(f"crm {command}: cannot open landing zone {landing}: {exc}") from exc
    if not found:
        raise SystemExit(f"crm {command}: landing zone {landing} is not a directory")


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
    print(message, flush=True)
