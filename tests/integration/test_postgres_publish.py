"""The PostgreSQL backend publishes what the DuckDB backend publishes: `crm publish` to a real
server (tests/pg_server.py) and the embedded file, from one copy of the session run's lake,
hold equal rows in every table of `crm`, `crm_ops` and `crm_restricted`; every table the
publish creates has its definition's comments; a second publish changes no row."""

from __future__ import annotations

import shutil
import subprocess
import sys

import duckdb
import psycopg
import pytest

from crm_pipeline.publish.ddl import WAREHOUSE_SCHEMAS, warehouse_specs
from crm_pipeline.publish.publish import gold_months, publish
from crm_pipeline.settings import REPO_ROOT, LakeLayout
from tests.conftest import role_url

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


def _pg_tables(url: str) -> dict[str, list[tuple]]:
    out = {}
    with psycopg.connect(url) as con:
        names = con.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema = "
                            "ANY(%s) AND table_type = 'BASE TABLE'", [list(WAREHOUSE_SCHEMAS)]).fetchall()
        for schema, table in names:
            out[f"{schema}.{table}"] = sorted(con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall(), key=repr)
    return out


def _duckdb_tables(path) -> dict[str, list[tuple]]:
    out = {}
    for file in (path, path.with_name(path.stem + "_restricted" + path.suffix)):
        con = duckdb.connect(str(file), read_only=True)
        try:
            names = con.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = "
                                "'BASE TABLE' AND table_catalog = current_database()").fetchall()
            for schema, table in names:
                out[f"{schema}.{table}"] = sorted(con.execute(f'SELECT * FROM "{schema}"."{table}"').fetchall(),
                                                  key=repr)
        finally:
            con.close()
    return out


@pytest.fixture(scope="module")
def both(published, pg_server, tmp_path_factory):
    """`crm publish` to a fresh, initialised PostgreSQL database (as its administrator, who acts as
    crm_loader), then the same lake published in-process to a DuckDB file."""
    import uuid

    from crm_pipeline.publish.postgres import BI, CAMPAIGN, LOADER, init_warehouse, password_setting

    root = tmp_path_factory.mktemp("pg-publish")
    shutil.copytree(published["lake"].root, root / "lake")
    lake = LakeLayout(str(root / "lake"))
    name = f"wh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url(database="postgres"), autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    url = pg_server.url(database=name)
    with pytest.MonkeyPatch.context() as env:
        for role in (LOADER, BI, CAMPAIGN):
            env.setenv(password_setting(role), f"{role}-pw")
        init_warehouse(url, progress=lambda _: None)
    cli = [sys.executable, "-m", "crm_pipeline.cli", "publish", "--lake", lake.root, "--warehouse", url]
    first = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    duck = root / "wh" / "warehouse.duckdb"
    publish(lake, f"duckdb:///{duck}", gold_months(lake), progress=lambda _: None)
    pg = _pg_tables(url)
    again = subprocess.run(cli, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    return dict(url=url, pg=pg, duck=_duckdb_tables(duck), again=_pg_tables(url), out=first.stdout)


#: crm_ops tables a publish writes of itself (publications) or as of its own clock (the status)
PER_PUBLISH = {"crm_ops.publications", "crm_ops.delivery_status", "crm_ops.month_status"}


def test_every_table_of_both_backends_holds_the_same_rows(both):
    pg, duck = both["pg"], both["duck"]
    assert set(pg) == set(duck)
    assert {f"{s}.{t}" for (s, t) in warehouse_specs()} <= set(pg)  # every defined table is there
    assert pg["crm_ops.restatements"] == []  # none in this lake: the table is there for BI, empty
    for table, rows in duck.items():
        if table not in PER_PUBLISH:
            assert pg[table] == rows, table
    # what each publish records of itself, and the operations view as of its own clock
    # crm_ops.publications: the DuckDB publish came after, so it holds the PostgreSQL one's rows and
    # its own: one run, the same tables and months
    extra = set(duck["crm_ops.publications"]) - set(pg["crm_ops.publications"])
    assert set(pg["crm_ops.publications"]) < set(duck["crm_ops.publications"])
    latest = max(pg["crm_ops.publications"], key=lambda r: r[-1])[0]  # the command line's publish
    assert len({r[0] for r in extra}) == 1
    assert {r[1:3] for r in extra} == {r[1:3] for r in pg["crm_ops.publications"] if r[0] == latest}
    assert [r[:3] for r in pg["crm_ops.delivery_status"]] == [r[:3] for r in duck["crm_ops.delivery_status"]]
    assert [r[:3] for r in pg["crm_ops.month_status"]] == [r[:3] for r in duck["crm_ops.month_status"]]
    # six months train a churn model, which scores the last: only the restatements are empty
    empty = {t for t, rows in duck.items() if not rows}
    assert empty <= {"crm_ops.restatements"}, empty


def test_the_publish_says_where_each_table_went_without_the_password(both):
    assert "crm_restricted.contact" in both["out"] and "schema crm_restricted" in both["out"]
    assert "admin-test-password" not in both["out"]


def test_republishing_changes_no_crm_table(both):
    for table, rows in both["pg"].items():
        if not table.startswith("crm_ops."):  # the ops logs gain the second publish's rows
            assert both["again"][table] == rows, table
    assert len(both["again"]["crm_ops.pipeline_runs"]) == len(both["pg"]["crm_ops.pipeline_runs"]) + 1


def test_every_published_table_and_column_carries_its_definition_as_comment(both):
    from crm_pipeline.publish.ddl import column_comment, table_comment

    with psycopg.connect(both["url"]) as con:
        for (schema, table), spec in warehouse_specs().items():
            fq = f'"{schema}"."{table}"'
            assert con.execute(f"SELECT obj_description('{fq}'::regclass)").fetchone() == (table_comment(spec),)
            comments = con.execute(f"SELECT attname, col_description('{fq}'::regclass, attnum) FROM pg_attribute "
                                   f"WHERE attrelid = '{fq}'::regclass AND attnum > 0 AND NOT attisdropped").fetchall()
            assert dict(comments) == {c.name: column_comment(c) for c in spec.columns}, fq


def _documented_queries() -> list[tuple[str, str]]:
    """(role, SQL) of every example query in docs/warehouse.md: ```sql blocks whose first line
    is `-- as <role>`."""
    text = (REPO_ROOT / "docs" / "warehouse.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```sql\n")[1:]]
    return [(b.splitlines()[0].removeprefix("-- as ").strip(), b) for b in blocks if b.startswith("-- as ")]


def test_the_documented_queries_run_as_their_role_and_return_rows(both):
    queries = _documented_queries()
    assert len(queries) >= 8
    answered = 0
    for role, sql in queries:
        with psycopg.connect(role_url(both["url"], role)) as con:
            answered += bool(con.execute(sql).fetchall())
    # this lake has no restatement and maybe no failed check
    assert answered >= len(queries) - 2
