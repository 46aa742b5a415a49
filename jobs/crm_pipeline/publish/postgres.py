"""The PostgreSQL warehouse (`postgresql://user@host:port/database`; PostgreSQL-compatible servers
such as Greenplum speak the same protocol and SQL).

Credentials: in the URL, or libpq's own settings (`PGPASSWORD`, `~/.pgpass`, `PGSSLMODE`, ...),
or, in Airflow, the connection `crm_warehouse` (dags/). Logs and crm_ops show the URL without
its password.

- **Schemas and roles** (`crm warehouse init`, as an administrator, idempotent): schemas `crm`,
  `crm_restricted` and `crm_ops` owned by `crm_loader`, which writes every table; `crm_bi` reads
  `crm` and `crm_ops`; `crm_campaign` reads `crm` and `crm_restricted`. Passwords come from the
  environment (`CRM_WAREHOUSE_<ROLE>_PASSWORD`), never from code. A publish connecting as an
  administrator (a member of `crm_loader`) acts as `crm_loader`, so the tables are the loader's
  and the readers' grants (default privileges) apply to them.
- **Atomic loads**: each table's new rows are copied (`COPY ... FROM STDIN`, CSV written by Arrow
  batch by batch, never collected whole) into a temporary staging table, then the replaced months are
  deleted and the staged rows inserted, in the publish's one transaction. A BI query running
  meanwhile sees the previous complete tables (MVCC) until the commit, then the new ones.
- **Definitions**: tables are created from `schemas/tables` with their primary key, NOT NULL
  columns, comments on every table and column, and an index per column BI filters by; an
  older table gets the columns the definition added, and anything else stops the publish
  (`ddl.migration`).
"""

from __future__ import annotations

import contextlib
import os

import pyarrow as pa
import pyarrow.csv as pacsv

from crm_pipeline.errors import UsageError
from crm_pipeline.feeds import TableSpec
from crm_pipeline.publish import ddl
from crm_pipeline.publish.ddl import WAREHOUSE_SCHEMAS, qualified, quote

LOADER, BI, CAMPAIGN = "crm_loader", "crm_bi", "crm_campaign"
#: schemas each reading role may read
READS = {BI: ("crm", "crm_ops"), CAMPAIGN: ("crm", "crm_restricted")}


def password_setting(role: str) -> str:
    """`CRM_WAREHOUSE_LOADER_PASSWORD` for crm_loader, and so on."""
    return f"CRM_WAREHOUSE_{role.removeprefix('crm_').upper()}_PASSWORD"


class _CopySink:
    """A file-like object the Arrow CSV writer writes into, forwarding each chunk to COPY."""

    def __init__(self, copy):
        self.copy = copy
        self.closed = False

    def write(self, data) -> int:
        self.copy.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def copy_rows(cur, table: str, columns: list[str], data: pa.RecordBatchReader) -> int:
    """Stream `data` into `table` with COPY (CSV, one Arrow batch at a time); rows copied."""
    cols = ", ".join(quote(c) for c in columns)
    rows = 0
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    with cur.copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)") as copy:
        sink = _CopySink(copy)
        with pacsv.CSVWriter(sink, data.schema, write_options=options) as writer:
            for batch in data:
                writer.write_batch(batch)
                rows += batch.num_rows
    return rows


class PostgresWarehouse:
    """`crm`, `crm_restricted` and `crm_ops` as schemas of one PostgreSQL database."""

    dialect = "postgresql"

    def __init__(self, target):
        self.target = target
        self._open = None  # the connection of a transaction() block
        self._ready: set[tuple[str, str]] = set()  # tables checked against their definition

    def where(self, schema: str) -> str:
        return f"{self.target.display} schema {schema}"

    def connect(self, autocommit: bool = False):
        import psycopg

        try:
            return psycopg.connect(self.target.url, autocommit=autocommit, application_name="crm-pipeline")
        except psycopg.OperationalError as exc:
            raise ConnectionError(f"cannot connect to warehouse {self.target.display}: "
                                  f"{str(exc).strip().splitlines()[0]}") from None

    def _writer(self):
        """A connection acting as crm_loader when the user may (an administrator, a member)."""
        con = self.connect()
        row = con.execute("SELECT current_user, pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles "
                          "WHERE rolname = %s", [LOADER]).fetchone()
        if row is not None and row[0] != LOADER and row[1]:
            con.execute(f"SET ROLE {LOADER}")
        missing = [s for s in WAREHOUSE_SCHEMAS if con.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", [s]).fetchone() is None]
        if missing:
            con.close()
            raise UsageError(f"warehouse {self.target.display} has no schema {', '.join(missing)}: run "
                             f"`crm warehouse init --warehouse URL` as its administrator first (docs/warehouse.md)")
        return con

    def check(self) -> None:
        """Connect as a publish would; ConnectionError or UsageError when it could not."""
        self._writer().close()

    @contextlib.contextmanager
    def _transaction(self):
        if self._open is not None:
            yield self._open
            return
        con = self._writer()
        try:
            yield con
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            con.close()

    @contextlib.contextmanager
    def transaction(self):
        """One transaction over every write inside the block: all commit together or none does."""
        with self._transaction() as con:
            self._open = con
            try:
                yield self
            finally:
                self._open = None

    def _ensure_table(self, con, spec: TableSpec) -> None:
        """Create the table from its definition (key, comments, indexes), or migrate an older one."""
        if (spec.schema, spec.table) in self._ready:
            return
        catalog = con.execute(ddl.CATALOG_QUERY.format(p="%s"), [spec.schema, spec.table]).fetchall()
        for statement in ddl.table_statements(spec, self.dialect, catalog):
            con.execute(statement)
        self._ready.add((spec.schema, spec.table))

    def _replace(self, schema: str, table: str, data, where: str, params: list) -> None:
        from crm_pipeline.publish.warehouse import conformed, table_definition

        spec = table_definition(schema, table, data)
        fq = qualified(schema, table)
        stage = quote(f"stage_{schema}_{table}")
        cols = ", ".join(quote(c) for c in spec.column_names)
        with self._transaction() as con:
            self._ensure_table(con, spec)
            con.execute(f"DROP TABLE IF EXISTS {stage}")
            con.execute(f"CREATE TEMPORARY TABLE {stage} (LIKE {fq}) ON COMMIT DROP")
            with con.cursor() as cur:
                copy_rows(cur, stage, spec.column_names, conformed(spec, data))
            con.execute(f"DELETE FROM {fq}{where}", params)
            con.execute(f"INSERT INTO {fq} ({cols}) SELECT {cols} FROM {stage}")
            con.execute(f"DROP TABLE {stage}")

    def replace_partitions(self, schema: str, table: str, data, column: str, values: list) -> None:
        """Replace the rows whose `column` is in `values` with `data`, in one transaction."""
        self._replace(schema, table, data, f" WHERE {quote(column)} = ANY(%s)", [list(values)])

    def replace_table(self, schema: str, table: str, data) -> None:
        """Swap the whole table's rows for `data` in one transaction."""
        self._replace(schema, table, data, "", [])

    def count_partitions(self, schema: str, table: str, column: str, values: list) -> int:
        """Rows of `table` whose `column` is in `values` (inside the open transaction, if any)."""
        with self._transaction() as con:
            return con.execute(f"SELECT count(*) FROM {qualified(schema, table)} WHERE {quote(column)} = ANY(%s)",
                               [list(values)]).fetchone()[0]

    def create_views(self) -> list[str]:
        """Create or replace every view of schemas/views whose tables exist, in one transaction.
        Returns their names."""
        with self._transaction() as con:
            statements, made = ddl.view_statements({f"{s}.{t}" for s, t in con.execute(
                "SELECT table_schema, table_name FROM information_schema.tables").fetchall()})
            for statement in statements:
                con.execute(statement)
            return made

    def query(self, sql: str, restricted: bool = False) -> list[tuple]:
        with self.connect() as con:
            return con.execute(sql).fetchall()


def init_warehouse(url: str, progress=print) -> list[str]:
    """Create (or bring up to date) the schemas, the roles and their grants; idempotent.
    Connect as a role that may create roles and schemas. Returns what was done."""
    from psycopg import sql

    from crm_pipeline.publish.warehouse import check_url

    target = check_url(url)
    if target.scheme not in ("postgresql", "postgres"):
        raise UsageError(f"{target.display}: roles and grants are for a server warehouse; the embedded DuckDB "
                         "warehouse keeps crm_restricted in a file only its owner can read")
    done: list[str] = []
    with PostgresWarehouse(target).connect(autocommit=True) as con:
        database = con.execute("SELECT current_database()").fetchone()[0]
        for role in (LOADER, BI, CAMPAIGN):
            if con.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone() is None:
                con.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
                done.append(f"created role {role}")
            password = os.environ.get(password_setting(role))
            if password:
                con.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role),
                                                                              sql.Literal(password)))
                done.append(f"set the password of {role} from {password_setting(role)}")
            con.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database),
                                                                             sql.Identifier(role)))
        for schema in WAREHOUSE_SCHEMAS:
            if con.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", [schema]).fetchone() is None:
                con.execute(f"CREATE SCHEMA {quote(schema)} AUTHORIZATION {LOADER}")
                done.append(f"created schema {schema}")
            con.execute(f"ALTER SCHEMA {quote(schema)} OWNER TO {LOADER}")
            con.execute(f"REVOKE ALL ON SCHEMA {quote(schema)} FROM PUBLIC")
        for role, schemas in READS.items():
            for schema in WAREHOUSE_SCHEMAS:
                s = quote(schema)
                if schema in schemas:
                    con.execute(f"GRANT USAGE ON SCHEMA {s} TO {role}")
                    con.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {role}")
                    con.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {LOADER} IN SCHEMA {s} GRANT SELECT ON TABLES TO {role}")
                else:
                    con.execute(f"REVOKE ALL ON SCHEMA {s} FROM {role}")
                    con.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {role}")
                    con.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {LOADER} IN SCHEMA {s} "
                                f"REVOKE SELECT ON TABLES FROM {role}")
        done.append(f"granted {BI} reading {', '.join(READS[BI])}; {CAMPAIGN} reading {', '.join(READS[CAMPAIGN])}; "
                    f"{LOADER} owning {', '.join(WAREHOUSE_SCHEMAS)}")
    for line in done:
        progress(f"warehouse init: {line}")
    return done
