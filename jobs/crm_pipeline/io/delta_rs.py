"""The lake's small bookkeeping tables (ops/*) read and appended through delta-rs, without Spark.

A Spark job on a table of a few hundred rows costs seconds of scheduling and Delta log replay in a
fresh JVM; these tables are read or appended once or twice per command, so delta-rs does it in
milliseconds, and a command with nothing to do never starts Spark. The tables stay ordinary Delta
tables (Spark, delta-rs and DuckDB read them alike); paths are local or object-store URIs
(`file://`, `s3a://`, `hdfs://`), credentials from the usual environment variables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.dataset as ds

#: a Delta checkpoint every this many versions of a table delta-rs writes, as Spark's writer makes them
CHECKPOINT_INTERVAL = 10
#: a Spark frame of at most this many rows (a batch's rejects, a small gold mart) is collected to the
#: driver and committed through delta-rs (`replace_table`): a Spark write of a few rows costs 0.5-2 s
#: on 2 cores (its write job, the Delta commit and the snapshot after it), the collect and the
#: delta-rs commit a few tenths; larger frames are written by the executors through Spark
LOCAL_WRITE_ROWS = 50_000
#: Commits that leave a table's content as it was: `crm maintain`'s, an operator's property or constraint
MAINTENANCE_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END", "SET TBLPROPERTIES",
                                    "UNSET TBLPROPERTIES", "ADD CONSTRAINT", "DROP CONSTRAINT"})


def table(path: str):
    """The Delta table at `path` (a deltalake.DeltaTable), or None before its first write."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(path)
    except TableNotFoundError:
        return None


def write_records(path: str, limit: int = 100) -> Iterator[dict | None]:
    """What the commits that wrote the table's content recorded (their userMetadata, a JSON
    object), newest first among the last `limit` commits: None for a commit that recorded none
    (another writer's); maintenance commits, which leave the content as it was, are skipped.
    From the Delta log alone; nothing before the table's first write."""
    found = table(path)
    for commit in ([] if found is None else found.history(limit)):  # newest first
        if commit.get("operation") in MAINTENANCE_OPERATIONS:
            continue
        try:
            record = json.loads(commit.get("userMetadata") or "null")
        except ValueError:  # metadata another writer left
            record = None
        yield record if isinstance(record, dict) else None


def dataset(path: str) -> ds.Dataset | None:
    """The current version of the table at `path` as a pyarrow dataset (scanned a batch at a time
    where the caller wants), or None before its first write."""
    found = table(path)
    return None if found is None else found.to_pyarrow_dataset()


def read(path: str, columns: list[str] | None = None, filter: ds.Expression | None = None) -> pa.Table | None:
    """The table at `path` (the given columns, the rows matching `filter`), or None before its first write."""
    found = dataset(path)
    return None if found is None else found.to_table(columns=columns, filter=filter)


def add_actions(path: str) -> pa.Table | None:
    """The data files of the table's current version, one row each (path, size_bytes,
    partition.<column>, ...), from the Delta log alone; None before the table's first write."""
    found = table(path)
    return None if found is None else pa.table(found.get_add_actions(flatten=True))


def column_type(path: str, column: str) -> str | None:
    """The Delta type of `column` in the table at `path` (`string`, `binary`, ...), from the Delta
    log alone; None before the table's first write or without such a column."""
    found = table(path)
    for field in ([] if found is None else found.schema().fields):
        if field.name == column:
            return getattr(field.type, "type", None)
    return None


def partition_values(path: str, column: str) -> set | None:
    """The values of partition `column` that hold data, from the Delta log alone (no data file is
    read), or None before the table's first write."""
    actions = add_actions(path)
    return None if actions is None else set(actions.column(f"partition.{column}").to_pylist())


def partition_bytes(path: str, column: str, values) -> int:
    """Bytes of the data files holding the given values of partition `column`, from the Delta log
    alone; 0 before the table's first write."""
    actions = add_actions(path)
    if actions is None:
        return 0
    wanted = set(values)
    return sum(size for size, value in zip(actions.column("size_bytes").to_pylist(),
                                           actions.column(f"partition.{column}").to_pylist()) if value in wanted)


def append_rows(path: str, rows: list[dict], schema: pa.Schema) -> None:
    """Append `rows` (dicts keyed by the fields of `schema`) in one Delta commit, creating the
    table on the first write; nothing for no rows. Every field is written nullable, as Spark
    writes Delta columns, so either writer may create a table."""
    from deltalake import write_deltalake

    if rows:
        write_deltalake(path, pa.Table.from_pylist(rows, schema=_nullable(schema)), mode="append")


def delete_where(path: str, predicate: str) -> None:
    """Delete the rows matching the SQL `predicate` in one commit (on partition columns only: whole
    files dropped, none read); nothing to do before the table's first write."""
    found = table(path)
    if found is not None:
        found.delete(predicate)


def replace_rows(path: str, rows: list[dict], schema: pa.Schema, predicate: str) -> None:
    """Replace the rows matching the SQL `predicate` (every one of `rows` must match it) with
    `rows`, in one Delta commit; on a table not written yet, create it with them."""
    from deltalake import write_deltalake

    if table(path) is None:
        append_rows(path, rows, schema)
        return
    write_deltalake(path, pa.Table.from_pylist(rows, schema=_nullable(schema)), mode="overwrite", predicate=predicate)


def replace_table(path: str, data: pa.Table, predicate: str, partition_by: list[str],
                  record: dict | None = None) -> None:
    """Replace the rows matching the SQL `predicate` with `data` in one Delta commit, as Spark's
    `replaceWhere` does: every row of `data` must match the predicate (delta-rs checks it), and no
    rows delete the matching ones. On a table not written yet, create it, partitioned by
    `partition_by`, even with no rows. Columns are written nullable, as Spark writes them, so that
    either writer may write the table next; a checkpoint every CHECKPOINT_INTERVAL versions.
    `record` goes into the commit as its userMetadata (JSON), as `delta.replace_where` puts it."""
    from deltalake import write_deltalake

    data, commit = data.cast(_nullable(data.schema)), _commit(record)
    if table(path) is None:
        write_deltalake(path, data, mode="append", partition_by=partition_by, commit_properties=commit)
    else:
        write_deltalake(path, data, mode="overwrite", predicate=predicate, commit_properties=commit)
    keep_checkpoints(path)


def overwrite_table(path: str, data: pa.Table, record: dict | None = None) -> None:
    """Replace the whole unpartitioned table at `path` with `data`, its columns too (Spark's
    `overwriteSchema`), in one Delta commit; create it on the first write. Nullable columns and the
    commit's userMetadata as for `replace_table`."""
    from deltalake import write_deltalake

    write_deltalake(path, data.cast(_nullable(data.schema)), mode="overwrite", schema_mode="overwrite",
                    commit_properties=_commit(record))
    keep_checkpoints(path)


def keep_checkpoints(path: str) -> None:
    """Write a checkpoint of the table's current version when it is a multiple of
    CHECKPOINT_INTERVAL, as Spark's writer does after its own commits: Spark replays a table's log
    from its last checkpoint, and delta-rs writes one only every 100 versions by default."""
    found = table(path)
    version = found.version() if found is not None else 0
    if version and version % CHECKPOINT_INTERVAL == 0:
        found.create_checkpoint()


def _nullable(schema: pa.Schema) -> pa.Schema:
    """`schema` with every field nullable, as Spark writes Delta columns, so either writer may
    create a table and the other write it next."""
    return pa.schema([f.with_nullable(True) for f in schema])


def _commit(record: dict | None):
    """The commit properties that put `record` into the commit as its userMetadata (JSON), where
    Spark's `userMetadata` option puts it and `write_records` reads it; None for no record."""
    from deltalake import CommitProperties

    return None if record is None else CommitProperties(custom_metadata={"userMetadata": json.dumps(record)})
