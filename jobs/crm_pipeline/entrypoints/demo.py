"""`crm demo`: generate a data set, then run the pipeline on it (embedded defaults)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from crm_pipeline import ops
from crm_pipeline.entrypoints.common import iso_date, progress, setup_logging
from crm_pipeline.settings import REPO_ROOT, LakeLayout, SparkSettings

DEFAULT_DIR = REPO_ROOT / "var" / "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"demo folder (default {DEFAULT_DIR})")
    parser.add_argument("--subscribers", type=int, default=2000)
    parser.add_argument("--start", type=iso_date, default=iso_date("2026-01-01"))
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    from crm_pipeline.generate import GeneratorConfig, generate

    landing, lake = args.dir / "landing", args.dir / "lake"
    t0 = time.monotonic()
    if not (landing / "_generator" / "truth.json").is_file():
        progress(f"demo: generating {args.subscribers} subscribers x {args.days} days into {landing}")
        generate(GeneratorConfig(landing=landing, subscribers=args.subscribers, start=args.start,
                                 days=args.days, seed=args.seed))
    else:
        progress(f"demo: reusing the generated landing zone {landing}")
    from crm_pipeline.entrypoints.ingest import print_summary
    from crm_pipeline.ingest.load import ingest
    from crm_pipeline.spark import build_session

    spark = build_session(SparkSettings.from_env())
    result = ingest(spark, landing, LakeLayout(str(lake)), ops.RunContext(ops.new_run_id("demo"), "cli", "ingest"),
                    progress=progress)
    print_summary(result)
    progress(f"demo: lake at {lake} (bronze/, silver/, restricted/quarantine, ops/) in {time.monotonic() - t0:.0f} s")
    return 0 if result.ok else 1
