"""Helpers of the crash tests: `crm` steps in processes of their own with a fault point armed
(`crm_pipeline.faults`), and order-independent contents of lake and warehouse tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from deltalake import DeltaTable

from tests.integration.conftest import KEY, warehouse_tables

LAYERS = ("bronze", "silver", "gold", "restricted")
RUN_SPECIFIC = {"run_id"}  # which run wrote a row: differs by construction


def crm(command: str, landing: Path | None, root: Path, fault: str | None,
        extra: list[str] | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`crm <command>` on the lake and warehouse under `root` (unless `extra` names another lake),
    in a process group of its own, with the fault point armed; `env` adds to its environment."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CRM_FAULT")},
           "CRM_MSISDN_HMAC_KEY": KEY, "CRM_SHUFFLE_PARTITIONS": "2", "CRM_DRIVER_MEMORY": "2g", **(env or {})}
    if fault:
        env["CRM_FAULT"] = fault
    extra = extra or []
    args = ([] if "--lake" in extra else ["--lake", str(root / "lake")]) + extra
    if command == "ingest":
        args += ["--landing", str(landing)]
    if command == "publish":
        args += ["--warehouse", f"duckdb:///{root / 'warehouse.duckdb'}"]
    return subprocess.run(
        [sys.executable, "-m", "crm_pipeline.cli", command, *args], env=env, capture_output=True, text=True,
        timeout=900, start_new_session=True,  # its own process group: the kill must not reach pytest
    )


def run_chain(chain: list[tuple[str, str | None]], landing: Path | None, root: Path,
              extra=lambda command: [], env: dict[str, str] | None = None
              ) -> dict[tuple[str, str | None], subprocess.CompletedProcess]:
    """Run each (command, fault) of `chain` under `root`: a step with a fault must die by it, a
    step without one must succeed. Returns each step's finished process (its output)."""
    out = {}
    for command, fault in chain:
        proc = crm(command, landing, root, fault, extra(command), env)
        expected = -signal.SIGKILL if fault else 0
        assert proc.returncode == expected, f"{command} {fault}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        out[(command, fault)] = proc
    return out


def lake_tables(lake: Path) -> dict[str, Path]:
    """`<layer>/<name>` -> path of every Delta table of the lake's data layers (not ops)."""
    return {f"{layer}/{p.name}": p for layer in LAYERS if (lake / layer).is_dir()
            for p in sorted((lake / layer).iterdir()) if (p / "_delta_log").is_dir()}


def comparable(table: pd.DataFrame) -> pd.DataFrame:
    """Every column but the run-specific ones, in name order; array cells (e.g. activity_months'
    sorted recharge_dates) as tuples, which hash and compare by value."""
    table = table.drop(columns=[c for c in table.columns if c in RUN_SPECIFIC])
    table = table[sorted(table.columns)].copy()
    for c in table.columns:
        if table[c].dtype == object:
            table[c] = table[c].map(lambda v: tuple(v) if isinstance(v, (list, np.ndarray)) else v)
    return table


def content(table: pd.DataFrame) -> tuple[int, int]:
    """Row count and an order-independent checksum of every column but the run-specific ones."""
    table = comparable(table)
    return len(table), int(pd.util.hash_pandas_object(table, index=False).sum())


def lake_contents(lake: Path) -> dict[str, tuple[int, int]]:
    return {name: content(DeltaTable(str(path)).to_pandas()) for name, path in lake_tables(lake).items()}


def warehouse_contents(root: Path) -> dict[str, tuple[int, int]]:
    """Content of every `crm` table of `root/warehouse.duckdb` and of `crm_restricted.contact`."""
    out = {f"crm.{name}": content(t) for name, t in warehouse_tables(root / "warehouse.duckdb", "crm").items()}
    contact = warehouse_tables(root / "warehouse_restricted.duckdb", "crm_restricted")["contact"]
    return {**out, "crm_restricted.contact": content(contact)}


def loaded_once(lake: Path) -> pd.Series:
    """Check the lake's loaded files and deliveries: each successfully loaded file adds up (read =
    loaded + quarantined + duplicate), and each delivery is on record as loaded once, however often
    it was read (a killed run's deliveries are read again). Returns the delivery each feed and day
    holds now (the latest loaded: a day re-delivered has had two), by (feed, business_date)."""
    rows = DeltaTable(str(lake / "ops" / "pipeline_runs")).to_pandas()
    files = rows[(rows["status"] == "SUCCESS") & rows["source_file"].fillna("").ne("")]
    assert not files.empty
    assert (files["rows_read"] == files["rows_loaded"] + files["rows_quarantined"] + files["rows_duplicate"]).all()
    deliveries = DeltaTable(str(lake / "ops" / "deliveries")).to_pandas()
    loaded = deliveries[deliveries["status"] == "LOADED"]
    assert not loaded["delivery_id"].duplicated().any(), loaded[loaded["delivery_id"].duplicated(keep=False)]
    return loaded.sort_values("logged_at", kind="stable").groupby(["feed", "business_date"])["delivery_id"].last()
