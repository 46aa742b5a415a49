"""The warehouse's tables as `schemas/tables/<table>.json` defines them: the published tables,
their DDL and comments for each backend, and the check of an existing table against its
definition (additive changes migrate; anything else stops the publish).

One definition per table drives the publish column lists (`publish.published_tables`), the DDL
and comments of both backends, the gold suites' not-null and key checks
(`quality.suites.table_checks`) and the data dictionary (`docs/data-dictionary.md`, `crm
warehouse dictionary`).
"""

from __future__ import annotations

from dataclasses import dataclass

from crm_pipeline.errors import PipelineError
from crm_pipeline.feeds import TableSpec, table_names, table_spec

#: SQL type of each column type of schemas/tables, per backend (also what each backend's catalog,
#: information_schema.columns.data_type, calls it)
SQL_TYPES: dict[str, dict[str, str]] = {
    "duckdb": {"string": "VARCHAR", "int": "INTEGER", "long": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN",
               "date": "DATE", "timestamp": "TIMESTAMP"},
    "postgresql": {"string": "text", "int": "integer", "long": "bigint", "double": "double precision",
                   "boolean": "boolean", "date": "date", "timestamp": "timestamp without time zone"},
}

#: the columns BI filters by: each gets an index of its own on a server warehouse
INDEXED_COLUMNS = ("month", "subscriber_id", "value_segment", "group_id")

WAREHOUSE_SCHEMAS = ("crm", "crm_restricted", "crm_ops")


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def qualified(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


def warehouse_specs() -> dict[tuple[str, str], TableSpec]:
    """(schema, table) -> definition of every table a publish writes (schemas crm,
    crm_restricted and crm_ops; gold-only tables stay in the lake)."""
    specs = (table_spec(n) for n in table_names())
    return {(s.schema, s.table): s for s in specs if s.schema in WAREHOUSE_SCHEMAS}


def spec_of(schema: str, table: str) -> TableSpec | None:
    return warehouse_specs().get((schema, table))


def column_comment(c) -> str:
    unit = f" [{c.unit}]" if c.unit and c.unit not in ("identifier", "code", "text", "date", "flag") else ""
    return f"{c.description}{unit}"


def table_comment(spec: TableSpec) -> str:
    key = f" Key: {', '.join(spec.key)}." if spec.key else ""
    return f"{spec.description} Grain: {spec.grain}.{key}"


def create_table(spec: TableSpec, dialect: str, name: str | None = None) -> str:
    """CREATE TABLE for `spec` (NOT NULL from the definition; a primary key on PostgreSQL, where
    a publish deletes and re-inserts keys in one transaction; DuckDB checks keys eagerly and would
    refuse that, so there the gold key checks stand for it)."""
    types = SQL_TYPES[dialect]
    cols = [f"{quote(c.name)} {types[c.type]}{'' if c.nullable else ' NOT NULL'}" for c in spec.columns]
    if dialect == "postgresql" and spec.key:
        cols.append(f"PRIMARY KEY ({', '.join(quote(k) for k in spec.key)})")
    return f"CREATE TABLE {name or qualified(spec.schema, spec.table)} (\n  " + ",\n  ".join(cols) + "\n)"


def comments(spec: TableSpec) -> list[str]:
    fq = qualified(spec.schema, spec.table)
    return [f"COMMENT ON TABLE {fq} IS {literal(table_comment(spec))}"] + [
        f"COMMENT ON COLUMN {fq}.{quote(c.name)} IS {literal(column_comment(c))}" for c in spec.columns]


def indexes(spec: TableSpec) -> list[str]:
    """An index per column BI filters by, unless the primary key already leads with it."""
    out = []
    for c in INDEXED_COLUMNS:
        if c in spec.column_names and spec.key[:1] != (c,):
            out.append(f"CREATE INDEX IF NOT EXISTS {quote(f'{spec.table}_{c}_idx')} "
                       f"ON {qualified(spec.schema, spec.table)} ({quote(c)})")
    return out


class SchemaMismatch(PipelineError):
    """A warehouse table that an additive migration cannot bring to its definition."""


@dataclass(frozen=True)
class Migration:
    add: list[str]  # ALTER TABLE statements, one per column the definition added


def migration(spec: TableSpec, dialect: str, existing: dict[str, tuple[str, bool]]) -> Migration:
    """How to bring a table whose catalog shows `existing` (column -> (type, nullable)) to `spec`:
    columns the definition added are added (nullable: older rows have no value); a column the
    warehouse has but the definition lacks, or holds with another type, stops the publish, since
    BI may depend on it and nothing here drops or converts data."""
    fq = qualified(spec.schema, spec.table)
    types = SQL_TYPES[dialect]
    problems = []
    for c in spec.columns:
        if c.name in existing and existing[c.name][0].lower() != types[c.type].lower():
            problems.append(f"column {c.name} is {existing[c.name][0]} in the warehouse, {types[c.type]} in "
                            f"schemas/tables/{spec.table}.json")
    dropped = [name for name in existing if name not in spec.column_names]
    if dropped:
        problems.append(f"column(s) {', '.join(dropped)} are in the warehouse but no longer in "
                        f"schemas/tables/{spec.table}.json (BI may depend on them)")
    if problems:
        raise SchemaMismatch(f"warehouse table {spec.schema}.{spec.table} does not match this version's definition: "
                             + "; ".join(problems) + ". Nothing was published; migrate the table by hand "
                             "(docs/warehouse.md, 'Schema changes') and publish again")
    add = [f"ALTER TABLE {fq} ADD COLUMN {quote(c.name)} {SQL_TYPES[dialect][c.type]}"
           for c in spec.columns if c.name not in existing]
    return Migration(add)


def table_statements(spec: TableSpec, dialect: str, catalog: list[tuple[str, str, bool]]) -> list[str]:
    """The statements that bring `spec`'s table to its definition, given the rows the backend's
    information_schema.columns holds for it ((column, data type, nullable); none when it does not
    exist): create it with its comments (and, on PostgreSQL, its indexes), or migrate it."""
    if not catalog:
        return [create_table(spec, dialect), *(comments(spec) if spec.description else []),
                *(indexes(spec) if dialect == "postgresql" else [])]
    return migration(spec, dialect, {name: (dtype, nullable) for name, dtype, nullable in catalog}).add


#: information_schema.columns of one table, as table_statements takes them (`{p}`: the
#: driver's parameter marker)
CATALOG_QUERY = ("SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns "
                 "WHERE table_schema = {p} AND table_name = {p} AND table_catalog = current_database() "
                 "ORDER BY ordinal_position")


@dataclass(frozen=True)
class ViewSpec:
    """A view BI users would otherwise write, from `schemas/views/<schema>.<view>.sql`: header lines
    `-- view:`, `-- requires:` (the tables it reads) and `-- description:`, then its SELECT (SQL
    that both backends run)."""

    schema: str
    name: str
    requires: tuple[str, ...]
    description: str
    select: str

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"

    def statements(self) -> list[str]:
        fq = qualified(self.schema, self.name)
        return [f"CREATE OR REPLACE VIEW {fq} AS\n{self.select}", f"COMMENT ON VIEW {fq} IS {literal(self.description)}"]


def view_statements(existing: set[str], schemas=WAREHOUSE_SCHEMAS) -> tuple[list[str], list[str]]:
    """(statements, view names) creating every view of `schemas` whose tables are among
    `existing` ("schema.table")."""
    statements, made = [], []
    for view in view_specs():
        if view.schema in schemas and set(view.requires) <= existing:
            statements += view.statements()
            made.append(view.qualified_name)
    return statements, made


def view_specs() -> list[ViewSpec]:
    from crm_pipeline.settings import resource_dir

    out = []
    for path in sorted((resource_dir("schemas") / "views").glob("*.sql")):
        header, body = {}, []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("-- ") and ":" in line and not body:
                key, _, value = line[3:].partition(":")
                header[key.strip()] = value.strip()
            elif line.strip():
                body.append(line)
        schema, _, name = header["view"].partition(".")
        if f"{schema}.{name}" != path.stem or schema not in WAREHOUSE_SCHEMAS:
            raise ValueError(f"{path}: the header `-- view: {header['view']}` must name the file's view in "
                             f"{', '.join(WAREHOUSE_SCHEMAS)}")
        out.append(ViewSpec(schema, name, tuple(header.get("requires", "").split()), header.get("description", ""),
                            "\n".join(body)))
    return out
