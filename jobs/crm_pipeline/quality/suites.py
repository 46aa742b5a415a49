"""Expectation suites of the bronze and silver layers, built from the feed contract, and the
not-null and key checks of the gold tables, built from their table definitions.

`schemas/feeds/<feed>.json` is the one source: the key, nullability, allowed codes and ranges
that silver typing enforces on every record are the same facts the suites check on the result,
so the two cannot drift apart. Likewise `schemas/tables/<table>.json`, which creates the
warehouse tables with their NOT NULL columns and primary keys, gives each gold suite its
not-null and key checks (`table_checks`). The rest of a gold suite stays hand-written in
`expectations/gold_<table>.json`: business rules no definition knows.

A suite is a plain dict in the file format (`name`, `meta`, `expectations` of `type`, `kwargs`,
`meta.severity`), so generated and hand-written suites run through the same code.
"""

from __future__ import annotations

from crm_pipeline.feeds import FeedSpec, TableSpec, load_feeds, table_names, table_spec
from crm_pipeline.transforms.staging.validate import LINEAGE

#: silver typing accepts an msisdn only as 11 digits once a country prefix is dropped
MSISDN_REGEX = r"^\d{11}$"
#: bronze: more than this share of lines without their key is a suspect delivery (warning)
BRONZE_KEY_MOSTLY = 0.99

LAYERS = ("bronze", "silver")


def _check(kind: str, severity: str = "blocking", **kwargs) -> dict:
    return {"type": f"expect_{kind}", "kwargs": kwargs, "meta": {"severity": severity}}


def bronze_suite(spec: FeedSpec) -> dict:
    """Lines split into fields, still strings: lineage complete, keys present on most lines."""
    checks = [_check("column_values_to_not_be_null", column=c) for c in LINEAGE]
    checks.append(_check("column_values_to_be_between", column="line_no", min_value=1))
    checks += [_check("column_values_to_not_be_null", "warning", column=k, mostly=BRONZE_KEY_MOSTLY)
               for k in spec.key]
    return {
        "name": f"bronze_{spec.feed}",
        "meta": {"layer": "bronze", "source": f"schemas/feeds/{spec.feed}.json",
                 "notes": "Structurally valid lines with lineage. Field values are still strings."},
        "expectations": checks,
    }


def silver_suite(spec: FeedSpec) -> dict:
    """Typed, deduplicated, subscriber-mapped records: every contract rule holds on every row.

    Blocking throughout (silver is clean by construction: a violation is a pipeline bug), except
    a field's `warn_above`, a plausibility bound that flags without rejecting.
    """
    part_col = spec.partition_column
    checks = [_check("column_values_to_not_be_null", column=part_col)]
    key = [part_col, *spec.key] if spec.kind == "snapshot" else list(spec.key)  # a snapshot per day
    if len(key) == 1:
        checks.append(_check("column_values_to_be_unique", column=key[0]))
    else:
        checks.append(_check("compound_columns_to_be_unique", column_list=key))
    for f in spec.fields:
        if not f.nullable:
            checks.append(_check("column_values_to_not_be_null", column=f.name))
        if f.type == "msisdn":
            checks.append(_check("column_values_to_match_regex", column=f.name, regex=MSISDN_REGEX))
        if f.allowed:
            checks.append(_check("column_values_to_be_in_set", column=f.name, value_set=list(f.allowed)))
        if f.min is not None or f.max is not None:
            bounds = {k: v for k, v in (("min_value", f.min), ("max_value", f.max)) if v is not None}
            checks.append(_check("column_values_to_be_between", column=f.name, **bounds))
        if f.warn_above is not None:
            checks.append(_check("column_values_to_be_between", "warning", column=f.name, max_value=f.warn_above))
    if spec.msisdn_field:
        checks.append(_check("column_values_to_not_be_null", column="subscriber_id"))
    return {
        "name": f"silver_{spec.feed}",
        "meta": {"layer": "silver", "source": f"schemas/feeds/{spec.feed}.json",
                 "notes": "Typed, deduplicated, subscriber-mapped records; built from the feed schema."},
        "expectations": checks,
    }


def feed_suite(table: str) -> dict | None:
    """The generated suite named `table` (`bronze_<feed>` or `silver_<feed>`), None for others."""
    layer, _, feed = table.partition("_")
    feeds = load_feeds()
    if layer not in LAYERS or feed not in feeds:
        return None
    return bronze_suite(feeds[feed]) if layer == "bronze" else silver_suite(feeds[feed])


def _key_check(key: list[str]) -> dict:
    if len(key) == 1:
        return _check("column_values_to_be_unique", column=key[0])
    return _check("compound_columns_to_be_unique", column_list=key)


def table_checks(spec: TableSpec, key_only: bool = False) -> list[dict]:
    """Blocking checks from a table definition: its key unique, its NOT NULL columns without nulls
    (only the key's columns with `key_only`, for a suite validating a frame derived from the table)."""
    columns = [c.name for c in spec.columns if not c.nullable and (not key_only or c.name in spec.key)]
    checks = [_check("column_values_to_not_be_null", column=c) for c in columns]
    return checks + ([_key_check(list(spec.key))] if spec.key else [])


def _same_check(a: dict, b: dict) -> bool:
    return a["type"] == b["type"] and a["kwargs"] == b["kwargs"]


def with_table_checks(table: str, suite: dict) -> dict:
    """A gold suite (`gold_<name>`) with the checks of `name`'s table definition in front; a
    hand-written check equal to a generated one is dropped. A suite whose `meta.frame` names
    another frame than the table gets the key checks only."""
    layer, _, name = table.partition("_")
    if layer != "gold" or name not in table_names():
        return suite
    generated = table_checks(table_spec(name), key_only=bool(suite.get("meta", {}).get("frame")))
    rest = [e for e in suite["expectations"] if not any(_same_check(e, g) for g in generated)]
    return {**suite, "expectations": generated + rest}
