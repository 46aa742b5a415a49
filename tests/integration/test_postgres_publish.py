"""The PostgreSQL backend publishes what the DuckDB backend publishes: `crm publish` to a real
server (tests/pg_server.py) and the embedded file, from one copy of the session run's lake,
hold equal rows in every table of `crm`, `crm_ops` and `crm_restricted`; every table the
publish creates has its definition's comments; a second publish changes no row; a reader sees
the previous tables until a publish commits, and all of them after a publish killed midway."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date

import duckdb
import psycopg
import pyarrow as pa
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


JAN, FEB = date(2026, 1, 1), date(2026, 2, 1)


def _gold(lake: LakeLayout, share: float) -> None:
    """Two gold marts of two months, every share in them `share`."""
    from deltalake import write_deltalake

    months = pa.array([JAN, FEB], pa.date32())
    write_deltalake(lake.gold("revenue_concentration"), pa.table({
        "month": months, "top20_revenue_share": [share, share], "gini": [0.3, 0.3],
        "subscribers": pa.array([10, 10], pa.int64()), "revenue_fen": pa.array([100, 100], pa.int64())}),
        mode="overwrite", partition_by=["month"])
    write_deltalake(lake.gold("revenue_lorenz"), pa.table({
        "month": months, "point": pa.array([1, 1], pa.int32()), "population_share": [0.5, 0.5],
        "revenue_share": [share, share]}), mode="overwrite", partition_by=["month"])


def _shares(url: str) -> tuple:
    """What a BI tool's own connection sees: the distinct shares of both tables."""
    with psycopg.connect(url) as con:
        return con.execute("SELECT (SELECT array_agg(DISTINCT top20_revenue_share) FROM crm.revenue_concentration), "
                           "(SELECT array_agg(DISTINCT revenue_share) FROM crm.revenue_lorenz)").fetchone()


def test_a_postgres_reader_sees_the_previous_tables_until_the_publish_commits(pg_database, tmp_path, monkeypatch):
    """The server warehouse: a publish killed with SIGKILL inside its transaction (after its first
    table) leaves every previous table, and while a publish holds its transaction open (paused
    after its first table) a reader's own connection sees the previous tables whole, without
    waiting; once it commits, the new ones. (The embedded warehouse: test_failures_on_record.py.)"""
    import os
    import signal
    import threading

    from crm_pipeline import faults

    lake = LakeLayout(str(tmp_path / "lake"))
    _gold(lake, 0.5)
    publish(lake, pg_database, [JAN, FEB], progress=lambda _: None)
    assert _shares(pg_database) == ([0.5], [0.5])
    _gold(lake, 0.75)

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CRM_FAULT")}, "CRM_FAULT": "publish:1"}
    killed = subprocess.run([sys.executable, "-m", "crm_pipeline.cli", "publish", "--lake", lake.root, "--warehouse",
                             pg_database, "--month", "2026-01", "--month", "2026-02"], env=env, capture_output=True,
                            text=True, timeout=300, start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "publish: crm.revenue_concentration" not in killed.stdout  # died right after writing it
    assert _shares(pg_database) == ([0.5], [0.5])

    reached, go = threading.Event(), threading.Event()

    def pause(name: str) -> None:  # the publish, inside its transaction after its first table
        if name == "publish" and not reached.is_set():
            reached.set()
            go.wait(120)

    monkeypatch.setattr(faults, "point", pause)
    done: list = []
    writer = threading.Thread(target=lambda: done.append(publish(lake, pg_database, [JAN, FEB],
                                                                 progress=lambda _: None)))
    writer.start()
    try:
        assert reached.wait(120)
        during = _shares(pg_database)
    finally:
        go.set()
        writer.join(120)
    assert during == ([0.5], [0.5]) and done and _shares(pg_database) == ([0.75], [0.75])
