"""Lake upkeep (crm_pipeline.maintenance): tables grouped by their writer, OPTIMIZE and VACUUM that
change no table's rows, the retention floor, and old Data Docs pruned with the index rebuilt."""

from __future__ import annotations

import os
import time
from datetime import date

import pytest
from deltalake import DeltaTable

from crm_pipeline import ops
from crm_pipeline.errors import UsageError
from crm_pipeline.maintenance import optimize_and_vacuum, prune_data_docs, tables
from crm_pipeline.settings import LakeLayout


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """Small appends as daily runs leave them (the tests only compact it: its rows never change)."""
    tmp_path = tmp_path_factory.mktemp("maintenance")
    lake = LakeLayout(str(tmp_path / "lake"))
    for day in range(1, 6):  # five small appends each, as daily runs leave them
        spark.createDataFrame([(date(2026, 3, day), day)], "business_date date, n int").write.format("delta") \
            .mode("append").save(lake.silver("cdr_voice"))
        spark.createDataFrame([(date(2026, 3, day), day)], "usage_date date, n int").write.format("delta") \
            .mode("append").save(lake.gold("daily_contacts"))
        ops.log_deliveries(lake, [("cdr_voice", date(2026, 3, day), f"d{day}", "run", "LOADED")])
    spark.createDataFrame([(date(2026, 3, 1), 1)], "month date, n int").write.format("delta").save(
        lake.gold("kpi_month"))
    (tmp_path / "lake" / "gold" / "not_a_table").mkdir()
    return lake


def test_tables_are_grouped_by_the_tasks_that_write_them(lake):
    assert tables(lake, "silver") == ["silver/cdr_voice", "gold/daily_contacts"]
    assert tables(lake, "gold") == ["gold/kpi_month", "ops/deliveries"]
    with pytest.raises(UsageError, match="no such table group"):
        tables(lake, "bronze")


def test_optimize_and_vacuum_compact_the_small_files_and_change_no_rows(spark, lake):
    before = {t: DeltaTable(f"{lake.root}/{t}").to_pyarrow_table().sort_by("n") for t in tables(lake, "silver")}
    assert len(DeltaTable(lake.silver("cdr_voice")).file_uris()) == 5
    done = {r["table"]: r for r in optimize_and_vacuum(spark, lake, "silver", 7, progress=lambda _: None)}
    assert sorted(done) == sorted(before)
    assert done["silver/cdr_voice"]["compacted"] == 5 and done["silver/cdr_voice"]["written"] == 1
    assert len(DeltaTable(lake.silver("cdr_voice")).file_uris()) == 1
    assert done["silver/cdr_voice"]["vacuumed"] == 0  # the compacted files are younger than the retention
    for t, rows in before.items():
        assert DeltaTable(f"{lake.root}/{t}").to_pyarrow_table().sort_by("n").equals(rows)
    with pytest.raises(UsageError, match="at least 7 days"):
        optimize_and_vacuum(spark, lake, "gold", 6)


def test_old_data_docs_are_pruned_and_the_index_lists_the_runs_kept(tmp_path):
    docs = tmp_path / "docs"
    old, new = time.time() - 100 * 86400, time.time()
    for run, when in (("run-old", old), ("run-new", new)):
        site = docs / "runs" / run
        site.mkdir(parents=True)
        (site / "index.html").write_text("<html></html>")
        result = docs / "results" / "silver_cdr_voice" / run / "x.json"
        result.parent.mkdir(parents=True)
        result.write_text("{}")
        for path in (site / "index.html", site, result):
            os.utime(path, (when, when))
    assert prune_data_docs(str(docs), 90, progress=lambda _: None) == ["run-old"]
    assert sorted(p.name for p in (docs / "runs").iterdir()) == ["run-new"]
    assert not (docs / "results" / "silver_cdr_voice" / "run-old").exists()
    index = (docs / "index.html").read_text()
    assert 'href="runs/run-new/index.html"' in index and "run-old" not in index
    assert prune_data_docs(None, 90, progress=lambda _: None) == []
