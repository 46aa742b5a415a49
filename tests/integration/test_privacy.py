"""No personal data where it does not belong: every msisdn, other-party number, customer name and
id number the landing zone delivered is searched for in every published column of `crm` and
`crm_ops`, every gold and ops table of the lake, the runs' output and logs, and their Data Docs
(GX results included), along with the HMAC secret. The restricted contact file and the silver
layer, where they belong, are scanned too: the scanner must find them there."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from tests.integration.conftest import KEY
from tests.integration.pii import Planted, planted

pytestmark = [pytest.mark.spark, pytest.mark.integration]


@pytest.fixture(scope="module")
def pii(published) -> Planted:
    found = planted(published["landing"], KEY)
    assert len(found.numbers) > 300 and len(found.texts) > 300  # numbers, names, id numbers
    return found


def _leaks(table: pa.Table, pii: Planted) -> dict[str, set[str]]:
    """Column -> personal data found in it (text and integer columns)."""
    out = {}
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_integer(column.type):
            hits = pii.scan(set(column.to_pylist()))
            if hits:
                out[name] = hits
    return out


def _warehouse_tables(path: Path, schema: str) -> dict[str, pa.Table]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ?", [schema]).fetchall()]
        return {n: con.sql(f'SELECT * FROM "{schema}"."{n}"').to_arrow_table() for n in names}
    finally:
        con.close()


def test_no_published_crm_or_crm_ops_column_holds_personal_data(published, pii):
    for schema in ("crm", "crm_ops"):
        tables = _warehouse_tables(published["warehouse"], schema)
        assert tables, schema
        for name, table in tables.items():
            assert not _leaks(table, pii), f"{schema}.{name}: {_leaks(table, pii)}"
    restricted = published["warehouse"].with_name("warehouse_restricted.duckdb")
    contact = _warehouse_tables(restricted, "crm_restricted")["contact"]
    assert "msisdn" in _leaks(contact, pii)  # where contact data belongs, the scanner finds it


def test_no_gold_or_ops_table_of_the_lake_holds_personal_data(published, pii):
    root = Path(published["lake"].root)
    scanned = 0
    for layer in ("gold", "ops"):
        for path in sorted(p for p in (root / layer).iterdir() if (p / "_delta_log").is_dir()):
            table = DeltaTable(str(path)).to_pyarrow_table()
            assert not _leaks(table, pii), f"{layer}/{path.name}: {_leaks(table, pii)}"
            scanned += 1
    assert scanned >= 20
    silver = DeltaTable(published["lake"].silver("subscriber")).to_pyarrow_table()
    assert {"msisdn", "customer_name", "id_number"} <= set(_leaks(silver, pii))


def test_the_runs_output_logs_and_data_docs_hold_no_personal_data_or_secret(published, pii):
    logs = published["logs"]
    assert "data quality (run run-1)" in logs and "INFO crm_pipeline" in logs
    assert not pii.scan([logs])
    docs = Path(published["lake"].data_docs)
    pages = list(docs.rglob("*.html")) + list(docs.rglob("*.json"))
    assert (docs / "runs" / "run-1" / "index.html") in pages and len(pages) > 20
    for page in pages:
        assert not pii.scan([page.read_text(encoding="utf-8", errors="replace")]), page
