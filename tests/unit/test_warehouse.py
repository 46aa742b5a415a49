"""The embedded DuckDB warehouse adapter: atomic replaces, URL paths, owner-only restricted file."""

from __future__ import annotations

import stat
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from crm_pipeline.errors import UsageError
from crm_pipeline.publish.warehouse import WarehouseTarget, open_warehouse

JAN, FEB = date(2026, 1, 1), date(2026, 2, 1)


def test_urls_follow_sqlalchemy_slashes():
    assert WarehouseTarget("duckdb:///var/w.duckdb").duckdb_path == Path("var/w.duckdb")
    assert WarehouseTarget("duckdb:////tmp/w.duckdb").duckdb_path == Path("/tmp/w.duckdb")
    assert WarehouseTarget("duckdb:////tmp/w.duckdb").restricted_path == Path("/tmp/w_restricted.duckdb")
    with pytest.raises(UsageError, match="unsupported warehouse URL"):
        open_warehouse("mysql://x/y")


def test_republishing_a_month_replaces_it_and_keeps_the_others(tmp_path):
    wh = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    wh.replace_partitions("crm", "t", pa.table({"month": [JAN, FEB], "x": [1, 2]}), "month", [JAN, FEB])
    wh.replace_partitions("crm", "t", pa.table({"month": [FEB, FEB], "x": [5, 6]}), "month", [FEB])
    assert wh.query('SELECT month, x FROM "crm"."t" ORDER BY 1, 2') == [(JAN, 1), (FEB, 5), (FEB, 6)]


def test_a_failed_replace_leaves_the_previous_table_whole(tmp_path):
    wh = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    wh.replace_partitions("crm", "t", pa.table({"month": [JAN, FEB], "x": [1, 2]}), "month", [JAN, FEB])
    bad = pa.table({"month": [FEB], "x": ["not a number"]})
    with pytest.raises(Exception):
        wh.replace_partitions("crm", "t", bad, "month", [FEB])
    assert wh.query('SELECT month, x FROM "crm"."t" ORDER BY 1') == [(JAN, 1), (FEB, 2)]


def test_restricted_schema_lives_in_an_owner_only_file(tmp_path):
    wh = open_warehouse(f"duckdb:///{tmp_path}/w.duckdb")
    wh.replace_table("crm_restricted", "contact", pa.table({"subscriber_id": ["S1"], "msisdn": ["13800000001"]}))
    assert stat.S_IMODE(wh.target.restricted_path.stat().st_mode) == 0o600
    assert wh.query('SELECT msisdn FROM "crm_restricted"."contact"', restricted=True) == [("13800000001",)]
    assert not wh.path.exists() or wh.query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'crm_restricted'") == [(0,)]
