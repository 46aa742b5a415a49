"""Throughput of the synthetic BOSS-export generator (`crm generate`), in records/s.

    .venv/bin/python bench/generator_throughput.py [--subscribers 5000] [--days 14] [--no-docs]

Generates a landing zone into a temporary folder, prints the data lines written per second
(all feeds; compression, hashing, control files and truth.json included in the time), and
replaces the section "Generator throughput" of docs/benchmarks.md with the figure, the machine
and the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from report import machine, replace_section  # noqa: E402


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="crm generate throughput")
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--start", default="2024-01-01")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-docs", action="store_true", help="print the figure only")
    args = parser.parse_args(argv)

    from crm_pipeline.generate import GeneratorConfig, generate

    landing = Path(tempfile.mkdtemp(prefix="crm-generate-bench-"))
    try:
        config = GeneratorConfig(landing=landing, subscribers=args.subscribers,
                                 start=date.fromisoformat(args.start), days=args.days, seed=args.seed,
                                 progress="none")
        t0 = time.perf_counter()
        summary = generate(config)
        seconds = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in landing.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(landing, ignore_errors=True)

    records = summary["records_total"]
    rate = records / seconds
    print(f"{records:,} records in {summary['files']:,} files ({size / 2**20:,.0f} MiB) "
          f"in {seconds:.2f} s: {rate:,.0f} records/s")
    if args.no_docs:
        return 0
    shown = sys.argv[1:] if argv is None else argv
    command = " ".join([".venv/bin/python bench/generator_throughput.py"] + [shlex.quote(a) for a in shown])
    per_feed = ", ".join(f"{feed} {n:,}" for feed, n in summary["records"].items())
    body = "\n".join([
        "Synthetic BOSS deliveries written by `crm generate`: every data line of every feed counts",
        "as a record; gzip, md5, control files and truth.json are inside the measured time.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| data set | {args.subscribers:,} subscribers x {args.days} days from {args.start}, seed {args.seed} |",
        f"| written | {records:,} records in {summary['files']:,} files, {size / 2**20:,.0f} MiB on disk |",
        f"| wall time | {seconds:.2f} s |",
        f"| **throughput** | **{rate:,.0f} records/s** |",
        f"| machine | nproc {nproc()}; {machine()} |",
        f"| software | Python {platform.python_version()}, numpy {_version('numpy')}, pyarrow {_version('pyarrow')} |",
        f"| command | `{command}` |",
        "",
        f"Records per feed: {per_feed}.",
    ])
    replace_section(args.docs, "Generator throughput", body)
    print(f"updated {args.docs}")
    return 0


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - a missing version must not fail the benchmark
        return "?"


if __name__ == "__main__":
    sys.exit(main())
