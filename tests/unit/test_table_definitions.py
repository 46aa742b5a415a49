"""One definition per published table (schemas/tables): complete, used by the publish for every
table it writes, and the source of the data dictionary in docs/."""

from __future__ import annotations

from crm_pipeline.publish.ddl import view_specs, warehouse_specs
from crm_pipeline.publish.dictionary import data_dictionary
from crm_pipeline.publish.publish import OPS_TABLES, STATUS_TABLES, published_tables
from crm_pipeline.settings import REPO_ROOT


def test_the_data_dictionary_in_docs_is_the_generated_one():
    committed = (REPO_ROOT / "docs" / "data-dictionary.md").read_text(encoding="utf-8")
    assert committed == data_dictionary(), "run `crm warehouse dictionary --out docs/data-dictionary.md`"


def test_every_table_a_publish_writes_has_a_definition():
    written = {(schema, name) for schema, name, _, _ in published_tables()}
    written |= {("crm_ops", name) for name in (*OPS_TABLES, *STATUS_TABLES)} | {("crm_restricted", "contact")}
    assert written == set(warehouse_specs())


def test_every_definition_names_its_key_and_each_column_its_unit_and_meaning():
    for (schema, table), spec in warehouse_specs().items():
        assert spec.description and spec.grain, table
        if "append-only" not in spec.description:
            assert spec.key, f"{schema}.{table} has no key"
        nullable = {c.name for c in spec.columns if c.nullable}
        assert not set(spec.key) & nullable, f"{schema}.{table}: key columns must be NOT NULL"
        for c in spec.columns:
            assert c.unit and c.description, f"{schema}.{table}.{c.name}"


def test_every_view_reads_defined_tables():
    defined = {f"{s}.{t}" for s, t in warehouse_specs()}
    views = view_specs()
    assert {v.qualified_name for v in views} >= {"crm.kpi_trend", "crm.segment_trend",
                                                  "crm_restricted.watchlist_contact"}
    for v in views:
        assert v.requires and set(v.requires) <= defined, v.qualified_name
        assert v.description and v.select.lstrip().upper().startswith(("SELECT", "WITH")), v.qualified_name


def test_gold_suites_take_their_not_null_and_key_checks_from_the_definitions_only():
    import json

    from crm_pipeline.feeds import table_names, table_spec
    from crm_pipeline.quality.gx import load_suite_definition
    from crm_pipeline.quality.suites import table_checks

    checked = 0
    for path in sorted((REPO_ROOT / "expectations").glob("gold_*.json")):
        name = path.stem.removeprefix("gold_")
        if name not in table_names():
            continue
        spec, hand = table_spec(name), json.loads(path.read_text(encoding="utf-8"))
        suite = load_suite_definition(path.stem)
        generated = table_checks(spec, key_only=bool(hand["meta"].get("frame")))
        assert suite["expectations"][:len(generated)] == generated, name
        for e in hand["expectations"]:  # nothing the definition says is copied by hand
            assert e not in generated, (name, e)
        key = suite["expectations"][len(generated) - 1]["kwargs"]
        assert key.get("column_list", [key.get("column")]) == list(spec.key), name
        checked += 1
    assert checked >= 15
