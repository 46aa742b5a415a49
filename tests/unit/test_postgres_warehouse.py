"""The PostgreSQL warehouse against a real server (tests/pg_server.py): atomic replaces that a
concurrent reader never sees half-done, tables from their definitions, additive migrations,
roles that read what the contract says and nothing else, values that survive the bulk load."""

from __future__ import annotations

import threading
from datetime import date, datetime

import psycopg
import pyarrow as pa
import pytest

from crm_pipeline.errors import UsageError
from crm_pipeline.feeds import table_spec
from crm_pipeline.publish.ddl import SchemaMismatch, column_comment, table_comment
from crm_pipeline.publish.postgres import BI, CAMPAIGN, LOADER, init_warehouse
from crm_pipeline.publish.warehouse import check_url, empty_table, open_warehouse
from tests.conftest import role_url

pytestmark = pytest.mark.postgres

JAN, FEB = date(2026, 1, 1), date(2026, 2, 1)


def _rows(url: str, sql: str) -> list[tuple]:
    with psycopg.connect(url) as con:
        return con.execute(sql).fetchall()


def test_urls_name_what_is_missing():
    assert check_url("postgresql://u@db.example:5432/crm").scheme == "postgresql"
    with pytest.raises(UsageError, match="postgresql://user@host"):
        check_url("postgresql://db.example")
    assert check_url("postgresql://u:secret@h/crm").display == "postgresql://u:***@h/crm"


def test_republishing_a_month_replaces_it_and_keeps_the_others(pg_database):
    wh = open_warehouse(pg_database)
    wh.replace_partitions("crm", "t", pa.table({"month": [JAN, FEB], "x": [1, 2]}), "month", [JAN, FEB])
    wh.replace_partitions("crm", "t", pa.table({"month": [FEB, FEB], "x": [5, 6]}), "month", [FEB])
    assert wh.query('SELECT month, x FROM crm.t ORDER BY 1, 2') == [(JAN, 1), (FEB, 5), (FEB, 6)]
    assert wh.count_partitions("crm", "t", "month", [FEB]) == 2


def test_a_failed_publish_leaves_every_previous_table_whole(pg_database):
    wh = open_warehouse(pg_database)
    with wh.transaction():
        wh.replace_partitions("crm", "a", pa.table({"month": [JAN], "x": [1]}), "month", [JAN])
        wh.replace_table("crm_ops", "b", pa.table({"y": ["old"]}))
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        with wh.transaction():
            wh.replace_table("crm_ops", "b", pa.table({"y": ["new"]}))
            wh.replace_partitions("crm", "a", pa.table({"month": [JAN], "x": ["not a number"]}), "month", [JAN])
    assert wh.query("SELECT x FROM crm.a") == [(1,)] and wh.query("SELECT y FROM crm_ops.b") == [("old",)]


def test_a_reader_during_a_publish_sees_the_old_or_the_new_complete_tables(pg_database):
    """A BI session polling two tables while a publish replaces both with more rows in one
    transaction: every poll sees both old (n, n) or both new (m, m), never a mix or an empty table."""
    wh = open_warehouse(pg_database)
    old, new = 1_000, 30_000
    with wh.transaction():
        wh.replace_partitions("crm", "a", pa.table({"month": [JAN] * old, "x": range(old)}), "month", [JAN])
        wh.replace_partitions("crm", "b", pa.table({"month": [JAN] * old, "x": range(old)}), "month", [JAN])
    seen: set[tuple[int, int]] = set()
    stop = threading.Event()

    def poll() -> None:
        with psycopg.connect(role_url(pg_database, BI), autocommit=True) as con:
            while not stop.is_set():
                seen.add(con.execute("SELECT (SELECT count(*) FROM crm.a), (SELECT count(*) FROM crm.b)").fetchone())
            seen.add(con.execute("SELECT (SELECT count(*) FROM crm.a), (SELECT count(*) FROM crm.b)").fetchone())

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        with wh.transaction():
            wh.replace_partitions("crm", "a", pa.table({"month": [JAN] * new, "x": range(new)}), "month", [JAN])
            assert _rows(role_url(pg_database, BI), "SELECT count(*) FROM crm.a") == [(old,)]  # not yet
            wh.replace_partitions("crm", "b", pa.table({"month": [JAN] * new, "x": range(new)}), "month", [JAN])
    finally:
        stop.set()
        reader.join()
    assert seen == {(old, old), (new, new)}


def test_a_published_table_has_its_definition_key_comments_and_indexes(pg_database):
    spec = table_spec("segment_summary")
    value = {"string": "x", "long": 1, "double": 0.5, "date": JAN, "int": 1, "boolean": True,
             "timestamp": datetime(2026, 1, 1)}
    data = pa.Table.from_pylist([{c.name: value[c.type] for c in spec.columns}], schema=empty_table(spec).schema)
    open_warehouse(pg_database).replace_partitions("crm", "segment_summary", data, "month", [JAN])
    catalog = _rows(pg_database, "SELECT column_name, is_nullable, col_description('crm.segment_summary'::regclass, "
                                 "ordinal_position) FROM information_schema.columns WHERE table_schema = 'crm' AND "
                                 "table_name = 'segment_summary' ORDER BY ordinal_position")
    assert [(n, nullable == "YES", comment) for n, nullable, comment in catalog] == [
        (c.name, c.nullable, column_comment(c)) for c in spec.columns]
    assert _rows(pg_database, "SELECT obj_description('crm.segment_summary'::regclass)") == [(table_comment(spec),)]
    key = _rows(pg_database, "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND "
                             "a.attnum = ANY(i.indkey) WHERE i.indrelid = 'crm.segment_summary'::regclass AND "
                             "i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)")
    assert tuple(k for (k,) in key) == spec.key
    indexed = {r[0] for r in _rows(pg_database, "SELECT indexdef FROM pg_indexes WHERE tablename = 'segment_summary'")}
    assert any("(value_segment)" in d for d in indexed)
    assert _rows(pg_database, "SELECT tableowner FROM pg_tables WHERE tablename = 'segment_summary'") == [(LOADER,)]


def test_values_survive_the_bulk_load_exactly(pg_database):
    data = pa.table({
        "s": ["plain", "", None, 'comma, "quote"\nnew line', "中文"],
        "n": pa.array([1, None, -(2**62), 0, 7], pa.int64()),
        "i": pa.array([1, 2, None, -3, 0], pa.int32()),
        "f": [0.1, None, 1e-300, -2.5, 1 / 3],
        "b": [True, False, None, True, False],
        "d": [JAN, None, FEB, JAN, FEB],
        "ts": [datetime(2026, 1, 1, 1, 2, 3, 456789), None, datetime(1999, 12, 31), datetime(2026, 2, 1), None],
    })
    wh = open_warehouse(pg_database)
    wh.replace_table("crm_ops", "values_check", data)
    assert wh.query("SELECT s, n, i, f, b, d, ts FROM crm_ops.values_check") == [
        tuple(r.values()) for r in data.to_pylist()]


def test_a_table_from_an_older_version_gains_new_columns_and_a_dropped_column_stops_the_publish(pg_database):
    spec = table_spec("revenue_concentration")
    values = {"month": JAN, "top20_revenue_share": 0.5, "gini": 0.4, "subscribers": 10, "revenue_fen": 1000}
    assert set(values) == set(spec.column_names)
    with psycopg.connect(pg_database) as con:  # as an older version would have left it: without gini
        con.execute(f"SET ROLE {LOADER}")
        con.execute("CREATE TABLE crm.revenue_concentration (month date NOT NULL, top20_revenue_share double "
                    "precision, subscribers bigint NOT NULL, revenue_fen bigint)")
    data = pa.table({c: [values[c]] for c in spec.column_names})
    wh = open_warehouse(pg_database)
    wh.replace_partitions("crm", "revenue_concentration", data, "month", [JAN])
    assert wh.query("SELECT gini FROM crm.revenue_concentration") == [(0.4,)]

    with psycopg.connect(pg_database) as con:  # a column BI reads that this version no longer publishes
        con.execute("ALTER TABLE crm.revenue_concentration ADD COLUMN legacy_share double precision")
    with pytest.raises(SchemaMismatch, match="legacy_share.*migrate the table by hand"):
        open_warehouse(pg_database).replace_partitions("crm", "revenue_concentration", data, "month", [JAN])
    assert wh.query("SELECT count(*) FROM crm.revenue_concentration") == [(1,)]


def test_each_role_reads_what_the_contract_says_and_writes_nothing(pg_database):
    init_warehouse(pg_database, progress=lambda _: None)  # a second init changes nothing
    wh = open_warehouse(pg_database)
    wh.replace_table("crm", "kpi", pa.table({"x": [1]}))
    wh.replace_table("crm_ops", "runs", pa.table({"x": [2]}))
    wh.replace_table("crm_restricted", "contacts", pa.table({"x": [3]}))
    can_read = {BI: {"crm.kpi", "crm_ops.runs"}, CAMPAIGN: {"crm.kpi", "crm_restricted.contacts"},
                LOADER: {"crm.kpi", "crm_ops.runs", "crm_restricted.contacts"}}
    for role, readable in can_read.items():
        for table in ("crm.kpi", "crm_ops.runs", "crm_restricted.contacts"):
            with psycopg.connect(role_url(pg_database, role)) as con:
                if table in readable:
                    assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (1,), (role, table)
                else:
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        con.execute(f"SELECT count(*) FROM {table}")
        if role != LOADER:
            with psycopg.connect(role_url(pg_database, role)) as con:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    con.execute("DELETE FROM crm.kpi")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(role_url(pg_database, BI).replace(f"{BI}-pw", "wrong"))


def test_a_warehouse_not_initialised_names_the_command_that_sets_it_up(pg_server):
    with psycopg.connect(pg_server.url(database="postgres"), autocommit=True) as con:
        con.execute('CREATE DATABASE "bare"')
    with pytest.raises(UsageError, match="crm warehouse init"):
        open_warehouse(pg_server.url(database="bare")).replace_table("crm", "t", pa.table({"x": [1]}))


def _kpi(month: date, arpu: float, churn: float) -> dict:
    return dict(month=month, dimension="ALL", dimension_value="ALL", active_subscribers=10, opening_subscribers=10,
                closing_subscribers=10, gross_adds=0, churned_subscribers=1, churn_rate=churn, revenue_fen=1000,
                arpu_fen=arpu, voice_mou_per_sub=1.0, data_mb_per_sub=2.0)


def test_bi_views_compute_the_trend_and_contact_data_stays_with_the_campaign_role(pg_database):
    wh = open_warehouse(pg_database)
    kpi = pa.Table.from_pylist([_kpi(JAN, 100.0, 0.10), _kpi(FEB, 110.0, 0.05)])
    wh.replace_partitions("crm", "kpi_month", kpi, "month", [JAN, FEB])
    assert wh.create_views() == ["crm.kpi_trend"]  # the other views' tables are not there yet
    rows = _rows(role_url(pg_database, BI), "SELECT month, prev_arpu_fen, arpu_change, churn_rate_change "
                                            "FROM crm.kpi_trend ORDER BY month")
    assert rows[0] == (JAN, None, None, None)
    assert rows[1][:2] == (FEB, 100.0) and rows[1][2] == pytest.approx(0.1) and rows[1][3] == pytest.approx(-0.05)

    watch = table_spec("churn_watchlist")
    values = dict(month=FEB, subscriber_id="S1", msisdn_key="k", churn_score=0.9, churn_risk_band="HIGH", clv_fen=5,
                  value_segment="VALUABLE", expected_loss_fen=4.5, top_reasons="[]", recommended_action="call",
                  priority_rank=1, control_group=False, churn_model_version="m1", payment_type="PREPAID")
    assert set(values) == set(watch.column_names)
    wh.replace_partitions("crm", "churn_watchlist", pa.Table.from_pylist([values]), "month", [FEB])
    wh.replace_table("crm_restricted", "contact", pa.table({"subscriber_id": ["S1"], "msisdn": ["13800000001"],
                                                            "customer_name": ["Li Lei"]}))
    assert "crm_restricted.watchlist_contact" in wh.create_views()
    assert _rows(role_url(pg_database, CAMPAIGN), "SELECT msisdn, priority_rank FROM crm_restricted.watchlist_contact"
                 ) == [("13800000001", 1)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _rows(role_url(pg_database, BI), "SELECT * FROM crm_restricted.watchlist_contact")


def test_a_publish_to_a_server_it_cannot_use_is_a_usage_error_before_any_work(pg_server, tmp_path, capsys):
    from crm_pipeline import cli

    with psycopg.connect(pg_server.url(database="postgres"), autocommit=True) as con:
        con.execute('CREATE DATABASE "not_initialised"')
    lake = str(tmp_path / "lake")
    for url, says in ((pg_server.url(database="not_initialised"), "crm warehouse init"),
                      (pg_server.url(password="wrong"), "password authentication failed"),
                      (f"postgresql://u:pw@127.0.0.1:{pg_server.port + 1 if pg_server.port < 65535 else 1}/crm",
                       "cannot connect to warehouse")):
        assert cli.main(["publish", "--lake", lake, "--warehouse", url]) == 2
        err = capsys.readouterr().err
        assert says in err and "wrong" not in err.replace("password authentication failed", ""), err
    assert not (tmp_path / "lake").exists()  # nothing was written


def test_crm_warehouse_init_sets_up_a_server_and_refuses_the_embedded_file(pg_server, tmp_path, capsys):
    from crm_pipeline import cli

    with psycopg.connect(pg_server.url(database="postgres"), autocommit=True) as con:
        con.execute('CREATE DATABASE "fresh"')
    url = pg_server.url(database="fresh")
    assert cli.main(["warehouse", "init", "--warehouse", url]) == 0
    out = capsys.readouterr().out
    assert "created schema crm_restricted" in out and "admin-test-password" not in out
    assert _rows(url, "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname LIKE 'crm%' "
                      "ORDER BY 1") == [("crm", LOADER), ("crm_ops", LOADER), ("crm_restricted", LOADER)]
    assert cli.main(["warehouse", "init", "--warehouse", url]) == 0  # again: nothing to create
    assert "created" not in capsys.readouterr().out
    assert cli.main(["warehouse", "init", "--warehouse", f"duckdb:///{tmp_path}/w.duckdb"]) == 2
    assert "server warehouse" in capsys.readouterr().err
