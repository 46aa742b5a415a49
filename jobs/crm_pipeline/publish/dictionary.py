"""The data dictionary of the warehouse, generated from `schemas/tables` (docs/data-dictionary.md
is this text; a test keeps the two equal, and the database comments come from the same
definitions)."""

from __future__ import annotations

from crm_pipeline.publish.ddl import SQL_TYPES, WAREHOUSE_SCHEMAS, warehouse_specs

SCHEMA_NOTES = {
    "crm": "Analytics results, readable by BI (`crm_bi`) and campaign tools (`crm_campaign`). No raw "
           "personal data: subscribers are identified by `subscriber_id` and `msisdn_key`.",
    "crm_restricted": "Contact data for campaign tools (`crm_campaign` only). In the embedded DuckDB "
                      "warehouse it lives in a separate file readable only by its owner.",
    "crm_ops": "Pipeline runs, data-quality results and restatements, for operations teams (`crm_bi`).",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") or "–"


def data_dictionary() -> str:
    specs = warehouse_specs()
    lines = [
        "# Data dictionary",
        "",
        "Every table the warehouse publishes, generated from `schemas/tables/*.json` by",
        "`crm warehouse dictionary --out docs/data-dictionary.md` (do not edit by hand). The same",
        "definitions create the tables, their keys and their comments in both backends",
        "(PostgreSQL types shown; DuckDB uses the equivalent VARCHAR, BIGINT, DOUBLE, TIMESTAMP).",
        "Money is in fen (1/100 CNY, integer) unless a column name ends in `_cny`; `month` is the",
        "first day of the month. Views are listed in docs/warehouse.md.",
        "",
    ]
    for schema in WAREHOUSE_SCHEMAS:
        tables = sorted(t for (s, t) in specs if s == schema)
        lines += [f"## Schema `{schema}`", "", SCHEMA_NOTES[schema], ""]
        lines += [f"- [`{schema}.{t}`](#{schema}{t})" for t in tables] + [""]
        for t in tables:
            spec = specs[(schema, t)]
            lines += [f"### {schema}.{t}", "", spec.description, "",
                      f"- **Grain**: {spec.grain}",
                      f"- **Key**: {', '.join(f'`{k}`' for k in spec.key) if spec.key else 'none (append-only log)'}"]
            if spec.partition:
                lines.append(f"- **Replaced per** `{spec.partition}`: publishing a `{spec.partition}` again replaces "
                             "all of its rows")
            lines += ["", "| column | type | unit | null | definition |", "|---|---|---|---|---|"]
            for c in spec.columns:
                lines.append(f"| `{c.name}` | {SQL_TYPES['postgresql'][c.type]} | {_cell(c.unit)} | "
                             f"{'yes' if c.nullable else 'no'} | {_cell(c.description)} |")
            lines.append("")
    return "\n".join(lines)
