"""A BI tool polling the warehouse: `python warehouse_reader.py <file.duckdb> <sql>` opens the file
read-only, prints the SQL's one row, closes it, and again, until a line arrives on stdin; then
reads once more and exits. Each connection waits while a publish holds the file, as
`crm_pipeline.publish.warehouse` readers do."""

from __future__ import annotations

import select
import sys

from crm_pipeline.publish.warehouse import duckdb_connect


def read(path: str, sql: str) -> None:
    con = duckdb_connect(path, read_only=True)
    try:
        print(*con.execute(sql).fetchone(), flush=True)
    finally:
        con.close()


def main(path: str, sql: str) -> None:
    while not select.select([sys.stdin], [], [], 0.05)[0]:
        read(path, sql)
    read(path, sql)  # what the reader sees once the block is over


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
