"""The lake's small bookkeeping tables (ops/*) read and appended through delta-rs, without Spark.

A Spark job on a table of a few hundred rows costs seconds of scheduling and Delta log replay in a
fresh JVM; these tables are read or appended once or twice per command, so delta-rs does it in
milliseconds, and a command with nothing to do never starts Spark. The tables stay ordinary Delta
tables (Spark, delta-rs and DuckDB read them alike); paths are local or object-store URIs
(`file://`, `s3a://`, `hdfs://`), credentials from the usual environment variables.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as ds


def read(path: str, columns: list[str] | None = None, filter: ds.Expression | None = None) -> pa.Table | None:
    """The table at `path` (the given columns, the rows matching `filter`), or None before its first write."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(path)
    except TableNotFoundError:
        return None
    return table.to_pyarrow_dataset().to_table(columns=columns, filter=filter)


def append(path: str, data: pa.Table) -> None:
    """Append `data` in one Delta commit (creating the table on the first write)."""
    from deltalake import write_deltalake

    if data.num_rows:
        write_deltalake(path, data, mode="append")


def nullable(schema: pa.Schema) -> pa.Schema:
    """Every field nullable, as Spark writes Delta columns, so either writer may create a table."""
    return pa.schema([f.with_nullable(True) for f in schema])
