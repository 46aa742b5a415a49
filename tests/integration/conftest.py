"""Fixtures shared by the integration modules: one local-mode `crm run` on generated data, run
twice, whose published tables the reference, idempotence and cluster tests all compare against."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from crm_pipeline import ops
from crm_pipeline.entrypoints.run import run_pipeline
from crm_pipeline.generate import GeneratorConfig, generate
from crm_pipeline.settings import LakeLayout
from tests.reference.recompute import recompute

KEY = "integration-test-key"


def warehouse_tables(path: Path, schema: str = "crm") -> dict[str, pd.DataFrame]:
    """Every table of a warehouse schema, rows sorted by every column."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY 1", [schema]).fetchall()]
        out = {}
        for n in names:
            df = con.execute(f'SELECT * FROM "{schema}"."{n}"').fetchdf()
            out[n] = df.sort_values(list(df.columns)).reset_index(drop=True)
        return out
    finally:
        con.close()


@pytest.fixture(scope="session")
def published(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    landing, lake = root / "landing", LakeLayout(str(root / "lake"))
    warehouse = root / "wh" / "warehouse.duckdb"
    # 95 days from January 1st: January and February complete (March lacks its bill run).
    generate(GeneratorConfig(landing=landing, subscribers=300, start=date(2026, 1, 1), days=95, seed=3,
                             progress="none"))
    code = run_pipeline(spark, landing, lake, f"duckdb:///{warehouse}", ops.RunContext("run-1"), KEY)
    first = warehouse_tables(warehouse)
    code2 = run_pipeline(spark, landing, lake, f"duckdb:///{warehouse}", ops.RunContext("run-2"), KEY)
    second = warehouse_tables(warehouse)
    return dict(code=code, code2=code2, first=first, second=second, ref=recompute(landing, KEY),
                warehouse=warehouse, landing=landing, lake=lake)
