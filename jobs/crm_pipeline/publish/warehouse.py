"""Warehouse adapters chosen by URL scheme: `duckdb:///path/to/file.duckdb` (embedded default) or
`postgresql://user@host:port/database` (a PostgreSQL server: `publish.postgres`).

DuckDB paths follow SQLAlchemy: three slashes and a relative path, or four slashes and an absolute one.
Every table a publish writes is created and checked from its definition in `schemas/tables`
(`publish.ddl`); a table without one (ad-hoc use) takes the columns of its first data.

Every write is one transaction per table, or one for every table written inside
`DuckDBWarehouse.transaction()` (what a publish does): a reader sees the previous complete
tables or the new ones, never a mix and never an empty table, and a publish killed midway
leaves the previous ones. A write that would leave two rows under one key of the table's
definition is refused and rolled back (`KeyNotUnique`), as PostgreSQL's primary keys refuse it.

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

from crm_pipeline.errors import PipelineError
from crm_pipeline.feeds import FieldSpec, TableSpec
from crm_pipeline.publish import ddl
from crm_pipeline.publish.ddl import quote, spec_of


class KeyNotUnique(PipelineError):
    """A write that would leave two rows of a table under one key of its definition."""


def check_key(con, spec: TableSpec, scope: str = "", params: list | None = None) -> None:
    """Raise `KeyNotUnique` when rows of the table (those `scope`, a WHERE clause, selects) share a
    key: DuckDB tables carry no primary key (see `ddl.create_table`), so a write checks its own.
    The message counts the keys and rows, never their values."""
    if not spec.key:
        return
    fq, keys = ddl.qualified(spec.schema, spec.table), ", ".join(quote(k) for k in spec.key)
    keys_held, rows = con.execute(f"SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {fq} "
                                  f"{scope} GROUP BY {keys} HAVING count(*) > 1)", params or []).fetchone()
    if keys_held:
        raise KeyNotUnique(f"{spec.schema}.{spec.table}: check key_unique failed: {keys_held:,} keys "
                           f"({', '.join(spec.key)}) held by {rows:,} rows; nothing of the write was kept")


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


POSTGRES_SCHEMES = ("postgresql", "postgres")


def check_url(url: str) -> WarehouseTarget:
    """The target of a warehouse URL; UsageError when no adapter serves it."""
    from crm_pipeline.errors import UsageError

    target = WarehouseTarget(url)
    if target.scheme in POSTGRES_SCHEMES:
        if not urlparse(url).hostname or not urlparse(url).path.strip("/"):
            raise UsageError(f"warehouse URL {target.display!r}: expected postgresql://user@host[:port]/database")
        return target
    if target.scheme != "duckdb":
        raise UsageError(f"unsupported warehouse URL {target.display!r}: expected duckdb:///path or "
                         "postgresql://user@host[:port]/database")
    try:
        target.duckdb_path
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return target


def check_warehouse(url: str) -> WarehouseTarget:
    """check_url, and for a server warehouse a connection and its schemas, before any work starts:
    UsageError naming what is wrong (unreachable, bad credentials, not initialised)."""
    from crm_pipeline.errors import UsageError

    target = check_url(url)
    if target.scheme in POSTGRES_SCHEMES:
        from crm_pipeline.publish.postgres import PostgresWarehouse

        try:
            PostgresWarehouse(target).check()
        except ConnectionError as exc:
            raise UsageError(str(exc)) from None
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


def open_warehouse(url: str):
    """The warehouse adapter of `url`: DuckDBWarehouse or PostgresWarehouse."""
    target = check_url(url)
    if target.scheme in POSTGRES_SCHEMES:
        from crm_pipeline.publish.postgres import PostgresWarehouse

        return PostgresWarehouse(target)
    return DuckDBWarehouse(target)


def _spec_type(dtype: pa.DataType) -> str:
    """The schemas/tables type of an Arrow type (tables with no definition)."""
    for test, name in ((pa.types.is_boolean, "boolean"), (pa.types.is_int32, "int"), (pa.types.is_integer, "long"),
                       (pa.types.is_floating, "double"), (pa.types.is_date, "date"),
                       (pa.types.is_timestamp, "timestamp"), (pa.types.is_string, "string"),
                       (pa.types.is_large_string, "string")):
        if test(dtype):
            return name
    raise TypeError(f"no warehouse type for Arrow type {dtype}")


ARROW_TYPES = {"string": pa.string(), "int": pa.int32(), "long": pa.int64(), "double": pa.float64(),
               "boolean": pa.bool_(), "date": pa.date32(), "timestamp": pa.timestamp("us")}


def empty_table(spec: TableSpec) -> pa.Table:
    """No rows, the definition's columns: what is published for a table the lake does not have yet."""
    return pa.schema([(c.name, ARROW_TYPES[c.type]) for c in spec.columns]).empty_table()


def table_definition(schema: str, table: str, data: pa.Table | pa.RecordBatchReader) -> TableSpec:
    """The definition of `schema.table` in schemas/tables, else one read off `data`'s columns
    (all nullable, no key, no comments)."""
    spec = spec_of(schema, table)
    if spec is not None:
        return spec
    cols = tuple(FieldSpec(f.name, _spec_type(f.type), True, "") for f in data.schema)
    return TableSpec(table, schema, "", "", cols)


def conformed(spec: TableSpec, data: pa.Table | pa.RecordBatchReader) -> pa.RecordBatchReader:
    """`data` with the definition's columns in its order (a stream, consumed once); a missing
    column names the table and the column."""
    missing = [c for c in spec.column_names if c not in data.schema.names]
    if missing:
        raise ValueError(f"data for {spec.schema}.{spec.table} lacks the columns {missing} of its definition")
    if isinstance(data, pa.Table):
        return data.select(spec.column_names).to_reader()
    positions = [data.schema.get_field_index(c) for c in spec.column_names]
    schema = pa.schema([data.schema.field(i) for i in positions])
    return pa.RecordBatchReader.from_batches(
        schema, (pa.RecordBatch.from_arrays([b.column(i) for i in positions], schema=schema) for b in data))


class DuckDBWarehouse:
    """The embedded warehouse: `crm` and `crm_ops` in one file, `crm_restricted` in another."""

    dialect = "duckdb"

    def __init__(self, target: WarehouseTarget):
        self.target = target
        self.path = target.duckdb_path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open = None  # the connection of a transaction() block

    def where(self, schema: str) -> str:
        """Where a schema's tables live, for progress lines."""
        if schema == "crm_restricted":
            return f"{self.target.restricted_path} (mode 0600)"
        return str(self.path)

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
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(catalog)}.{quote(schema)}")
        return con, f"{quote(catalog)}.{quote(schema)}"

    def _ensure_table(self, con, spec: TableSpec) -> None:
        """Create the table from its definition, or migrate an older one (ddl.migration)."""
        catalog = con.execute(ddl.CATALOG_QUERY.format(p="?"), [spec.schema, spec.table]).fetchall()
        for statement in ddl.table_statements(spec, self.dialect, catalog):
            con.execute(statement)

    def _in_transaction(self, schema: str, table: str, data, statements,
                        replaced: tuple[str, list] | None = None) -> None:
        """Register `data` as `incoming` (conformed to the table's definition) and run
        `statements(con, fq, columns)` in one transaction (the open `transaction()` block's, if any),
        then check the table's key: over the rows whose column holds the values `replaced` names
        when the key holds that column, else over the whole table."""
        spec = table_definition(schema, table, data)
        scope = ()
        if replaced and replaced[0] in spec.key:
            scope = (f"WHERE {quote(replaced[0])} IN (SELECT UNNEST(?))", [list(replaced[1])])
        con, _ = self._connect(schema)
        fq = ddl.qualified(schema, table)
        cols = ", ".join(quote(c) for c in spec.column_names)

        def run() -> None:
            self._ensure_table(con, spec)
            con.register("incoming", conformed(spec, data))
            try:
                statements(con, fq, cols)
            finally:
                con.unregister("incoming")
            check_key(con, spec, *scope)

        if con is self._open:
            run()
            return
        try:
            con.execute("BEGIN TRANSACTION")
            run()
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        finally:
            con.close()

    def replace_partitions(self, schema: str, table: str, data, column: str, values: list) -> None:
        """Replace the rows whose `column` is in `values` with `data`, in one transaction."""

        def statements(con, fq: str, cols: str) -> None:
            con.execute(f"DELETE FROM {fq} WHERE {quote(column)} IN (SELECT UNNEST(?))", [list(values)])
            con.execute(f"INSERT INTO {fq} ({cols}) SELECT {cols} FROM incoming")

        self._in_transaction(schema, table, data, statements, (column, values))

    def count_partitions(self, schema: str, table: str, column: str, values: list) -> int:
        """Rows of `table` whose `column` is in `values` (inside the open transaction, if any)."""
        con, _ = self._connect(schema)
        try:
            return con.execute(f"SELECT count(*) FROM {ddl.qualified(schema, table)} WHERE {quote(column)} "
                               "IN (SELECT UNNEST(?))", [list(values)]).fetchone()[0]
        finally:
            if con is not self._open:
                con.close()

    def replace_table(self, schema: str, table: str, data) -> None:
        """Swap the whole table's rows for `data` in one transaction."""

        def statements(con, fq: str, cols: str) -> None:
            con.execute(f"DELETE FROM {fq}")
            con.execute(f"INSERT INTO {fq} ({cols}) SELECT {cols} FROM incoming")

        self._in_transaction(schema, table, data, statements)

    def create_views(self) -> list[str]:
        """Create or replace every view of schemas/views whose tables exist; the views of
        `crm_restricted` are left out here, its tables living in another file. Returns their names."""
        con = duckdb_connect(self.path)
        try:
            statements, made = ddl.view_statements(
                {f"{s}.{t}" for s, t in con.execute("SELECT table_schema, table_name FROM information_schema.tables "
                                                    "WHERE table_catalog = current_database()").fetchall()},
                schemas=[s for s in ddl.WAREHOUSE_SCHEMAS if s != "crm_restricted"])
            con.execute("BEGIN TRANSACTION")
            for statement in statements:
                con.execute(statement)
            con.execute("COMMIT")
            return made
        finally:
            con.close()

    def query(self, sql: str, restricted: bool = False) -> list[tuple]:
        path = self.target.restricted_path if restricted else self.path
        con = duckdb_connect(path, read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
