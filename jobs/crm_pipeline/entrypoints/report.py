"""`crm report`: the monthly CRM report of a lake as one self-contained HTML file (crm_pipeline.report)."""

from __future__ import annotations

import argparse
from pathlib import Path

from crm_pipeline.entrypoints.common import check_lake, year_month
from crm_pipeline.errors import EXIT_OK, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lake", required=True, help="Delta Lake root (local path or Hadoop URI)")
    parser.add_argument("--month", type=year_month, help="month to report, YYYY-MM (default: the latest analysed)")
    parser.add_argument("--out", type=Path,
                        help="HTML file to write (default: crm-report-YYYY-MM.html in the current directory)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the tables read and each section's time")


def run(args: argparse.Namespace) -> int:
    from crm_pipeline.entrypoints.common import setup_logging
    from crm_pipeline.report import write_report
    from crm_pipeline.settings import LakeLayout

    setup_logging(args.verbose)
    check_lake(args.lake, "gold", "analysed")
    if args.out is not None and args.out.is_dir():
        raise UsageError(f"--out {args.out} is a directory: name the HTML file to write")
    path, month = write_report(LakeLayout(args.lake), args.out, args.month)
    print(f"report of {month:%Y-%m} written to {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline)")
    return EXIT_OK
