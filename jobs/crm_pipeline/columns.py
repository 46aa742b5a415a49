"""Column -> Column helpers for logic that recurs across jobs. Written once, used everywhere."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date, datetime

from pyspark.sql import Column
from pyspark.sql import functions as F


def mask_value(col: Column) -> Column:
    """Mask PII for anything that leaves the restricted zone: keep the first 3 and last 2 characters."""
    n = F.length(col)
    return F.when(col.isNull(), F.lit(None)).when(
        n <= 5, F.lit("*****")
    ).otherwise(F.concat(F.substring(col, 1, 3), F.repeat(F.lit("*"), n - 5), F.substring(col, -2, 2)))


def _hmac_pads(key: bytes) -> tuple[str, str]:
    import hashlib

    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = key.ljust(64, b"\0")
    return bytes(b ^ 0x36 for b in key).hex(), bytes(b ^ 0x5C for b in key).hex()


def hmac_sha256_hex(col: Column, key: str) -> Column:
    """HMAC-SHA256 of a string column under `key` (UTF-8), lower-case hex; NULL stays NULL.

    Computed in the JVM (RFC 2104 from two SHA-256 passes), equal to Python's
    `hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()`.
    """
    ipad, opad = _hmac_pads(key.encode("utf-8"))
    inner = F.sha2(F.concat(F.unhex(F.lit(ipad)), F.encode(col, "UTF-8")), 256)
    return F.when(col.isNotNull(), F.sha2(F.concat(F.unhex(F.lit(opad)), F.unhex(inner)), 256))


def hmac_sha256(col: Column, key: str) -> Column:
    """The 32 bytes `hmac_sha256_hex` spells in hex (BINARY; `F.hex` gives the hex back in upper
    case, `F.unhex` of a hex key gives these bytes). Half the width of the hex string: for keys
    that are shuffled and stored by the hundred million (the calling circle's contact pairs)."""
    return F.unhex(hmac_sha256_hex(col, key))


def code_rank(col: Column, codes: Sequence[str]) -> Column:
    """1-based position of `col` among `codes` sorted (NULL when NULL or not one of them).

    The max or min of a string column makes Spark sort the rows to aggregate them (its hash
    aggregation keeps fixed-width buffers only); of this rank it aggregates by hash, and `code_at`
    turns the result back. `codes`: every value the column can hold (a feed's allowed list, which
    silver enforces), so the rank orders them as the strings would.
    """
    return _literal_map((code, rank) for rank, code in enumerate(sorted(set(codes)), 1))[col]


def code_at(rank: Column, codes: Sequence[str]) -> Column:
    """The code at a `code_rank` position (NULL for NULL)."""
    return _literal_map(enumerate(sorted(set(codes)), 1))[rank]


def _literal_map(pairs) -> Column:
    return F.create_map(*[F.lit(x) for pair in pairs for x in pair])


# Literals in one expression. Each `F.lit` is a call from Python into the JVM (about 0.05-0.1 ms,
# more when Spark's lock is busy); `isin` and `F.array` of a few hundred values, as a backlog of
# days or files gives them, made thousands of such calls a feed. A SQL expression of the same
# literals is parsed in the JVM in one call.

def spark_sql_literal(value) -> str:
    """`value` (str, date, bool, int, finite float or None) as a literal of Spark's SQL parser:
    strings escaped as that parser reads them (a backslash escapes the next character), floats
    exact as doubles. For Spark expressions only: `delta.sql_literal` spells the predicates of
    Delta writes, which delta-rs parses too, and that parser takes no backslash escapes."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, date):  # (datetime is a date: its time would be lost)
        if isinstance(value, datetime):
            raise TypeError(f"not a date: {value!r}")
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return f"CAST('{value!r}' AS DOUBLE)"
    raise TypeError(f"no SQL literal for {value!r}")


def isin(column: str, values: Iterable) -> Column:
    """`F.col(column).isin(values)` in one call into the JVM (FALSE for no values, as `isin`)."""
    values = sorted(set(values), key=lambda v: (v is None, v))
    if not values:
        return F.lit(False)
    return F.expr(f"`{column}` IN ({', '.join(spark_sql_literal(v) for v in values)})")


def literal_array(values: Sequence) -> Column:
    """`F.array(*map(F.lit, values))` in one call into the JVM (an empty array of strings for none)."""
    if not values:
        return F.array().cast("array<string>")
    return F.expr(f"array({', '.join(spark_sql_literal(v) for v in values)})")
