"""Feed specifications, loaded from `schemas/feeds/<feed>.json` (the input contract as code)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from pyspark.sql import types as T

from crm_pipeline.settings import resource_dir

#: Spark type of each contract type once parsed.
SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "msisdn": T.StringType(),
    "phone": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "timestamp": T.TimestampNTZType(),  # BOSS local wall-clock time (Asia/Shanghai)
    "date": T.DateType(),
    "month": T.DateType(),
    "flag": T.BooleanType(),
}


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    nullable: bool
    description: str
    allowed: tuple[str, ...] | None = None
    min: int | None = None
    max: int | None = None
    pii: bool = False
    #: plausibility bound: larger values load but fail a warning check in silver
    warn_above: int | None = None
    #: unit of a published column (fen, minutes, MB, share 0-1, ...; schemas/tables)
    unit: str = ""

    @property
    def spark_type(self) -> T.DataType:
        return SPARK_TYPES[self.type]


@dataclass(frozen=True)
class FeedSpec:
    """One BOSS feed: its fields in delivery order, identity key and time semantics.

    kind: `snapshot` (full daily state, partitioned by snapshot date), `event` (records with their
    own event time, partitioned by event date), `monthly` (bill lines, partitioned by bill month).
    """

    feed: str
    kind: str
    cadence: str
    key: tuple[str, ...]
    msisdn_field: str | None
    event_time: str | None
    description: str
    fields: tuple[FieldSpec, ...]

    @property
    def upper(self) -> str:
        return self.feed.upper()

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def n_fields(self) -> int:
        return len(self.fields)

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.feed} has no field {name}")

    @property
    def partition_column(self) -> str:
        """Silver partition column: the snapshot date, the bill month, or the event's own date."""
        return {"snapshot": "snapshot_date", "monthly": "bill_month_date"}.get(self.kind, "event_date")

    @property
    def is_daily(self) -> bool:
        """Daily feeds deliver every day; a month is complete only when all of them have."""
        return self.cadence == "daily"

    def typed_schema(self) -> T.StructType:
        return T.StructType([T.StructField(f.name, f.spark_type, f.nullable) for f in self.fields])


def _load(path) -> FeedSpec:
    raw = json.loads(path.read_text(encoding="utf-8"))
    fields = tuple(
        FieldSpec(
            name=f["name"],
            type=f["type"],
            nullable=f["nullable"],
            description=f.get("description", ""),
            allowed=tuple(f["allowed"]) if f.get("allowed") else None,
            min=f.get("min"),
            max=f.get("max"),
            pii=f.get("pii", False),
            warn_above=f.get("warn_above"),
        )
        for f in raw["fields"]
    )
    unknown = {f.type for f in fields} - SPARK_TYPES.keys()
    if unknown:
        raise ValueError(f"{path}: unknown field types {sorted(unknown)}")
    bounded = [f.name for f in fields
               if (f.min is not None or f.max is not None or f.warn_above is not None) and f.type not in ("int", "long")]
    if bounded:
        raise ValueError(f"{path}: min, max and warn_above apply to int and long fields only, "
                         f"not to {', '.join(bounded)}")
    return FeedSpec(
        feed=raw["feed"],
        kind=raw["kind"],
        cadence=raw["cadence"],
        key=tuple(raw["key"]),
        msisdn_field=raw.get("msisdn_field"),
        event_time=raw.get("event_time"),
        description=raw.get("description", ""),
        fields=fields,
    )


@lru_cache(maxsize=1)
def load_feeds() -> dict[str, FeedSpec]:
    """All feeds by name, in the order they must be processed (snapshots first)."""
    specs = [_load(p) for p in sorted((resource_dir("schemas") / "feeds").glob("*.json"))]
    order = {"snapshot": 0, "event": 1, "monthly": 2}
    specs.sort(key=lambda s: (order[s.kind], s.feed != "plan", s.feed))
    return {s.feed: s for s in specs}


def feed_spec(feed: str) -> FeedSpec:
    feeds = load_feeds()
    if feed not in feeds:
        raise KeyError(f"unknown feed {feed!r}; known: {', '.join(feeds)}")
    return feeds[feed]


@dataclass(frozen=True)
class TableSpec:
    """A published table: schema, grain and column meanings (also the data dictionary)."""

    table: str
    schema: str
    grain: str
    description: str
    columns: tuple[FieldSpec, ...]
    partition: str | None = None
    #: the columns that identify a row (its grain); empty for append-only logs
    key: tuple[str, ...] = ()

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}"

    def spark_schema(self) -> T.StructType:
        return T.StructType([T.StructField(c.name, SPARK_COLUMN_TYPES[c.type], c.nullable) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


SPARK_COLUMN_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "double": T.DoubleType(),
    "boolean": T.BooleanType(),
    "date": T.DateType(),
    "timestamp": T.TimestampNTZType(),  # ops timestamps are UTC wall-clock
}


@lru_cache(maxsize=None)
def table_spec(name: str) -> TableSpec:
    path = resource_dir("schemas") / "tables" / f"{name}.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    cols = tuple(FieldSpec(c["name"], c["type"], c["nullable"], c.get("description", ""), unit=c.get("unit", ""))
                 for c in raw["columns"])
    bad = {c.type for c in cols} - SPARK_COLUMN_TYPES.keys()
    if bad:
        raise ValueError(f"{path}: unknown column types {sorted(bad)}")
    key = tuple(raw.get("key", ()))
    unknown = [k for k in key if k not in {c.name for c in cols}]
    if unknown:
        raise ValueError(f"{path}: key columns {unknown} are not columns of the table")
    return TableSpec(raw["table"], raw["schema"], raw["grain"], raw["description"], cols, raw.get("partition"), key)


def table_names() -> list[str]:
    """Every table defined in schemas/tables."""
    return sorted(p.stem for p in (resource_dir("schemas") / "tables").glob("*.json"))


def conform(df, spec: TableSpec):
    """`df` with exactly the spec's columns, in order, cast to the declared types."""
    missing = [c for c in spec.column_names if c not in df.columns]
    if missing:
        raise ValueError(f"{spec.schema}.{spec.table}: frame lacks columns {missing}")
    return df.select(*[df[c.name].cast(SPARK_COLUMN_TYPES[c.type]).alias(c.name) for c in spec.columns])
