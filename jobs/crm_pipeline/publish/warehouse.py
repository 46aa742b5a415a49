"""Warehouse adapters chosen by URL scheme: `duckdb:///path/to/file.duckdb` (embedded default).

Paths follow SQLAlchemy: three slashes and a relative path, or four slashes and an absolute one.

Every write is one transaction per table, or one for every table written inside
`DuckDBWarehouse.transaction()` (what a publish does): a reader sees the previous complete
tables or the new ones, never a mix and never an empty table, and a publish killed midway
leaves the previous ones.

A DuckDB file has one writer process or any number of reader processes at a time: a publish waits
(up to `CRM_WAREHOUSE_LOCK_WAIT` seconds, default 600) while a reader in another process holds
the file; a reader opening it during the publish is refused until the publish ends (this
module's readers wait and retry) and never sees its tables half-written.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa


@dataclass(frozen=True)
class WarehouseTarget:
    url: str

    @property
    def scheme(self) -> str:
        return urlparse(self.url).scheme

    @property
    def display(self) -> str:
        """The URL without credentials (for logs and crm_ops)."""
        parsed = urlparse(self.url)
        if parsed.password is None:
            return self.url
        return self.url.replace(f":{parsed.password}@", ":***@", 1)

    @property
    def duckdb_path(self) -> Path:
        """As in SQLAlchemy URLs: `duckdb:///rel/path.duckdb` is relative, `duckdb:////abs/path` absolute."""
        parsed = urlparse(self.url)
        if parsed.netloc:
            raise ValueError(f"{self.url!r}: a DuckDB URL has no host; use duckdb:///relative or duckdb:////absolute")
        return Path(parsed.path[1:])

    @property
    def restricted_path(self) -> Path:
        """`crm_restricted` lives in its own file, readable only by its owner."""
        p = self.duckdb_path
        return p.with_name(p.stem + "_restricted" + p.suffix)


def check_url(url: str) -> WarehouseTarget:
    """The target of a warehouse URL; UsageError when no adapter serves it."""
    from crm_pipeline.errors import UsageError

    target = WarehouseTarget(url)
    if target.scheme != "duckdb":
        raise UsageError(f"unsupported warehouse URL {target.display!r}: expected duckdb:///path")
    try:
        target.duckdb_path
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return target


#: seconds a connection waits for a file lock another process holds (CRM_WAREHOUSE_LOCK_WAIT)
DEFAULT_LOCK_WAIT = 600.0


def duckdb_connect(path: Path | str, read_only: bool = False, wait: float | None = None):
    """A DuckDB connection to `path`, waiting while another process holds the file (a publish, or a
    reader while publishing), polling every half second; after `wait` seconds (default
    CRM_WAREHOUSE_LOCK_WAIT or 600) a RuntimeError names the file and DuckDB's account of the holder."""
    import logging
    import time

    import duckdb

    if wait is None:
        wait = float(os.environ.get("CRM_WAREHOUSE_LOCK_WAIT", DEFAULT_LOCK_WAIT))
    deadline, told = time.monotonic() + wait, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() >= deadline:
                raise RuntimeError(f"warehouse file {path} stayed locked by another process for {wait:.0f} s "
                                   f"(CRM_WAREHOUSE_LOCK_WAIT): {exc}") from None
            if not told:
                logging.getLogger(__name__).warning("waiting for warehouse file %s: %s", path, exc)
                told = True
            time.sleep(0.5)


def open_warehouse(url: str) -> DuckDBWarehouse:
    return DuckDBWarehouse(check_url(url))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DuckDBWarehouse:
    """The embedded warehouse: `crm` and `crm_ops` in one file, `crm_restricted` in another."""

    def __init__(self, target: WarehouseTarget):
        self.target = target
        self.path = target.duckdb_path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open = None  # the connection of a transaction() block

    @contextlib.contextmanager
    def transaction(self):
        """One transaction over every write to `crm` and `crm_ops` inside the block (one file):
        all of them commit together or none does."""
        con = duckdb_connect(self.path)
        con.execute("BEGIN TRANSACTION")
        self._open = con
        try:
            yield self
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            self._open = None
            con.close()

    def _connect(self, schema: str):
        if self._open is not None and schema != "crm_restricted":
            con = self._open
        elif schema == "crm_restricted":
            path = self.target.restricted_path
            old = os.umask(0o077)
            try:
                con = duckdb_connect(path)
            finally:
                os.umask(old)
            os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        else:
            con = duckdb_connect(self.path)
        catalog = con.execute("SELECT current_database()").fetchone()[0]
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(catalog)}.{_quote(schema)}")
        return con, f"{_quote(catalog)}.{_quote(schema)}"

    def _ensure_table(self, con, fq: str, data: pa.Table) -> None:
        con.execute(f"CREATE TABLE IF NOT EXISTS {fq} AS SELECT * FROM incoming LIMIT 0")
        have = {r[0] for r in con.execute(f"SELECT column_name FROM (DESCRIBE {fq})").fetchall()}
        for field in data.schema:
            if field.name not in have:
                dtype = con.execute(f"SELECT typeof({_quote(field.name)}) FROM incoming LIMIT 1").fetchone()
                dtype = dtype[0] if dtype else "VARCHAR"
                con.execute(f"ALTER TABLE {fq} ADD COLUMN {_quote(field.name)} {dtype}")

    def _in_transaction(self, schema: str, table: str, data: pa.Table, statements) -> None:
        """Register `data` as `incoming` and run `statements(con, fq)` in one transaction (the
        open `transaction()` block's, if any)."""
        con, qualified = self._connect(schema)
        fq = f"{qualified}.{_quote(table)}"
        if con is self._open:
            con.register("incoming", data)
            statements(con, fq)
            con.unregister("incoming")
            return
        try:
            con.register("incoming", data)
            con.execute("BEGIN TRANSACTION")
            statements(con, fq)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def replace_partitions(self, schema: str, table: str, data: pa.Table, column: str, values: list) -> None:
        """Replace the rows whose `column` is in `values` with `data`, in one transaction."""

        def statements(con, fq: str) -> None:
            self._ensure_table(con, fq, data)
            con.execute(f"DELETE FROM {fq} WHERE {_quote(column)} IN (SELECT UNNEST(?))", [list(values)])
            con.execute(f"INSERT INTO {fq} BY NAME SELECT * FROM incoming")

        self._in_transaction(schema, table, data, statements)

    def count_partitions(self, schema: str, table: str, column: str, values: list) -> int:
        """Rows of `table` whose `column` is in `values` (inside the open transaction, if any)."""
        con, qualified = self._connect(schema)
        try:
            return con.execute(f"SELECT count(*) FROM {qualified}.{_quote(table)} WHERE {_quote(column)} "
                               "IN (SELECT UNNEST(?))", [list(values)]).fetchone()[0]
        finally:
            if con is not self._open:
                con.close()

    def replace_table(self, schema: str, table: str, data: pa.Table) -> None:
        """Swap the whole table for `data` in one transaction."""
        self._in_transaction(
            schema, table, data, lambda con, fq: con.execute(f"CREATE OR REPLACE TABLE {fq} AS SELECT * FROM incoming")
        )

    def query(self, sql: str, restricted: bool = False) -> list[tuple]:
        path = self.target.restricted_path if restricted else self.path
        con = duckdb_connect(path, read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
