"""Fixtures shared by the integration modules: one local-mode `crm run` on generated data, run
twice, whose published tables the reference, idempotence, report and failure tests all use.

The data is the demo's, made smaller: 400 subscribers over six complete months, the fewest that
allow a churn model (it needs four labelled months, and a month is labelled once M+2 is
complete), so one run has every mart, a model, its scores and its watch list."""

from __future__ import annotations

import contextlib
import io
import logging
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from crm_pipeline import ops
from crm_pipeline.entrypoints.run import run_pipeline
from crm_pipeline.generate import GeneratorConfig, generate
from crm_pipeline.quality import gx
from crm_pipeline.settings import LakeLayout
from tests.reference.recompute import recompute

KEY = "integration-test-key"
SUBSCRIBERS = 400
#: the complete months of the run, and the last day delivered
MONTHS = [date(2026, m, 1) for m in range(1, 7)]
LAST_DAY = date(2026, 7, 4)


def warehouse_tables(path: Path, schema: str = "crm") -> dict[str, pd.DataFrame]:
    """Every table of a warehouse schema, rows sorted by every column."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE' "
            "ORDER BY 1", [schema]).fetchall()]
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
    # 185 days from January 1st: January to June complete (the June bill lands on July 2), with
    # June's late CDRs of July 1-3 and the deliveries of July 4; the demo's seed
    generate(GeneratorConfig(landing=landing, subscribers=SUBSCRIBERS, start=date(2026, 1, 1), days=185, seed=42,
                             progress="none"))
    gx.keep_results(lake.data_docs)  # as the command line does: Data Docs per run
    with _captured() as logs:  # everything the runs print and log, for the privacy scan
        code = run_pipeline(spark, landing, lake, f"duckdb:///{warehouse}", ops.RunContext("run-1"), KEY)
        first, versions = warehouse_tables(warehouse), lake_versions(lake)
        code2 = run_pipeline(spark, landing, lake, f"duckdb:///{warehouse}", ops.RunContext("run-2"), KEY)
        second = warehouse_tables(warehouse)
    return dict(code=code, code2=code2, first=first, second=second, ref=recompute(landing, KEY),
                warehouse=warehouse, landing=landing, lake=lake, logs=logs.getvalue(),
                versions=(versions, lake_versions(lake)))


def lake_versions(lake: LakeLayout) -> dict[str, int]:
    """Delta version of every data table of the lake (bronze, silver, gold, quarantine)."""
    from deltalake import DeltaTable

    root = Path(lake.root)
    return {f"{layer}/{p.name}": DeltaTable(str(p)).version()
            for layer in ("bronze", "silver", "gold", "restricted") if (root / layer).is_dir()
            for p in sorted((root / layer).iterdir()) if (p / "_delta_log").is_dir()}


@contextlib.contextmanager
def _captured():
    """stdout, stderr and every log record at INFO and above, into one buffer."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
