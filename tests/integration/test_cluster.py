"""The pipeline on a real Spark standalone cluster computes what local mode computes, and
recovers when its driver is killed.

The cluster is the one infra/spark/standalone.sh starts: a master and two workers, separate JVM
processes bound to 127.0.0.1, from the pyspark distribution's `bin/spark-class`. Each `crm` step
is the command line in its own process (its driver), pointed at the master with CRM_SPARK_MASTER.

- Ingest: `crm ingest` of a small landing zone (a snapshot and two CDR feeds, two days), its files
  read and verified by the executors, loads bronze, silver and quarantine equal to a local-mode
  ingest of the same files.
- The monthly steps, as a crash chain (`crm_pipeline.faults`) on a copy of the session's shared
  local-mode run with its rollups and its last month's marts taken away: `crm rollup` killed
  between its two tables, `crm analyse --month` killed between two gold marts, `crm publish`
  into an empty warehouse killed between two tables of its transaction, each run again. Each
  kill takes the driver's whole process group; its executors end with it. Every lake table and
  every warehouse table then equals the local-mode run's (doubles within 1e-9: summed in
  another order on other executors).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import socket
import subprocess
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from crm_pipeline import ops
from crm_pipeline.feeds import table_spec
from crm_pipeline.generate import GeneratorConfig, generate
from crm_pipeline.ingest.load import ingest
from crm_pipeline.io import delta
from crm_pipeline.pipeline.marts import MART_TABLES
from crm_pipeline.settings import LakeLayout
from tests.integration.conftest import KEY, warehouse_tables
from tests.integration.crash import RUN_SPECIFIC, crm, lake_tables, run_chain

pytestmark = [pytest.mark.spark, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "spark" / "standalone.sh"
TOLERANCE = 1e-9  # doubles summed in another order on other executors

CHAIN = [("rollup", "rollup"), ("rollup", None), ("analyse", "gold:2"), ("analyse", None),
         ("publish", "publish:2"), ("publish", None)]
ROLLUPS = ("daily_usage_by_subscriber", "daily_contacts", "contact_months")
MONTH = date(2026, 3, 1)  # the shared run's last complete month
INGESTED = "subscriber,cdr_voice,cdr_data"  # a snapshot and two CDR feeds, read by the executors


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("spark-cluster")
    env = dict(os.environ, CRM_CLUSTER_DIR=str(state), CRM_CLUSTER_PORT=str(_free_port()),
               CRM_WORKER_CORES="1", CRM_WORKER_MEMORY="1536m", SPARK_LOCAL_IP="127.0.0.1")
    started = subprocess.run([str(SCRIPT), "start", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, f"cluster did not start:\n{started.stderr}"
    try:
        yield dict(url=started.stdout.strip().splitlines()[-1], state=state, env=env)
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def _on(cluster) -> dict[str, str]:
    """The environment that points a `crm` step at the cluster."""
    return dict(CRM_SPARK_MASTER=cluster["url"], CRM_DRIVER_MEMORY="1g", SPARK_LOCAL_IP="127.0.0.1")


@pytest.fixture(scope="module")
def cluster_ingest(spark, cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-ingest")
    landing = root / "landing"
    generate(GeneratorConfig(landing=landing, subscribers=20, start=date(2026, 3, 1), days=2, seed=17,
                             bad_rate=0.01, progress="none"))
    local = LakeLayout(str(root / "local" / "lake"))
    with contextlib.redirect_stdout(io.StringIO()):
        ingest(spark, landing, local, ops.RunContext("local"), feeds=INGESTED.split(","))
    proc = crm("ingest", landing, root / "cluster", None, ["--feeds", INGESTED], env=_on(cluster))
    return dict(landing=landing, local=root / "local" / "lake", cluster=root / "cluster" / "lake", proc=proc)


@pytest.fixture(scope="module")
def monthly(spark, cluster, published, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-monthly")
    lake = LakeLayout(str(shutil.copytree(published["lake"].root, root / "lake")))
    local = dict(lake={name: _frame(path) for name, path in lake_tables(Path(lake.root)).items()},
                 warehouse=_warehouse(Path(published["warehouse"]).parent))
    for name in ROLLUPS:
        shutil.rmtree(lake.gold(name))
    shutil.rmtree(lake.ops("rollup_watermark"))  # every silver day is pending again
    for name in MART_TABLES:
        delta.delete_where(spark, lake.gold(name), f"{table_spec(name).partition} = {delta.sql_literal(MONTH)}")
    out = run_chain(CHAIN, None, root, _arguments, _on(cluster))  # publish: into an empty warehouse
    return dict(local=local, root=root, out=out, landing=published["landing"])


def _arguments(command: str) -> list[str]:
    return ["--month", MONTH.isoformat()] if command == "analyse" else []


def _frame(path: Path) -> pd.DataFrame:
    table = DeltaTable(str(path)).to_pandas()
    return table.drop(columns=[c for c in table.columns if c in RUN_SPECIFIC])


def _warehouse(root: Path) -> dict[str, pd.DataFrame]:
    out = {f"crm.{name}": t for name, t in warehouse_tables(root / "warehouse.duckdb", "crm").items()}
    out["crm_restricted.contact"] = warehouse_tables(root / "warehouse_restricted.duckdb", "crm_restricted")["contact"]
    return out


def test_the_cluster_has_a_master_and_two_workers(cluster):
    status = subprocess.run([str(SCRIPT), "status"], env=cluster["env"], capture_output=True, text=True)
    assert status.returncode == 0
    assert status.stdout.splitlines()[0] == cluster["url"]
    pids = [int(line.split("pid")[1]) for line in status.stdout.splitlines()[1:]]
    assert len(set(pids)) == 3 and os.getpid() not in pids


def test_an_ingest_on_the_cluster_loads_what_local_mode_loads(cluster_ingest):
    proc = cluster_ingest["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    local, remote = lake_tables(cluster_ingest["local"]), lake_tables(cluster_ingest["cluster"])
    assert set(remote) == set(local) >= {"bronze/cdr_data", "silver/cdr_data", "silver/subscriber",
                                         "restricted/quarantine"}
    differing = {name: diffs[:5] for name in local
                 if (diffs := _differences(_frame(local[name]), _frame(remote[name])))}
    assert not differing, differing
    assert len(_frame(local["restricted/quarantine"])) > 0  # bad records were read by the executors too


def test_each_kill_left_work_undone_that_the_next_run_finished(monthly):
    out = {step: proc.stdout for step, proc in monthly["out"].items()}
    assert "rollups: rebuilt 95 days" in out[("rollup", None)]
    assert "analyse: gold written" not in out[("analyse", "gold:2")]
    assert "analyse: gold written" in out[("analyse", None)]
    assert "publish: crm.subscriber_month" in out[("publish", "publish:2")]
    assert "publish: crm_restricted.contact" not in out[("publish", "publish:2")]


def test_every_lake_table_equals_the_local_runs(monthly):
    remote = lake_tables(monthly["root"] / "lake")
    assert set(remote) == set(monthly["local"]["lake"]) and len(remote) > 30
    differing = {name: diffs[:5] for name, local in monthly["local"]["lake"].items()
                 if (diffs := _differences(local, _frame(remote[name])))}
    assert not differing, differing


def test_every_warehouse_table_equals_the_local_runs(monthly):
    remote = _warehouse(monthly["root"])
    assert set(remote) == set(monthly["local"]["warehouse"]) and len(remote) > 10
    differing = {name: diffs[:5] for name, local in monthly["local"]["warehouse"].items()
                 if (diffs := _differences(local, remote[name].drop(columns=[c for c in remote[name].columns
                                                                             if c in RUN_SPECIFIC])))}
    assert not differing, differing


def test_both_workers_ran_the_pipelines_tasks(cluster, cluster_ingest, monthly):
    """Each worker launched executors for the runs, and they finished tasks: the work was spread
    over the cluster, not done in the driver."""
    for worker in ("worker-1", "worker-2"):
        logs = list((cluster["state"] / worker).glob("app-*/*/stderr"))
        assert logs, f"{worker} launched no executor"
        finished = sum(p.read_text(errors="replace").count("Finished task") for p in logs)
        assert finished > 0, f"{worker}'s executors finished no task"


def test_the_cluster_runs_output_holds_no_personal_data(cluster, cluster_ingest, monthly):
    """Every driver's output and every executor's log: no number, name or secret."""
    from tests.integration.pii import planted

    procs = [cluster_ingest["proc"], *monthly["out"].values()]
    text = [t for proc in procs for t in (proc.stdout, proc.stderr)]
    text += [p.read_text(errors="replace") for p in cluster["state"].rglob("stderr")]
    assert text[0]
    for landing in (cluster_ingest["landing"], monthly["landing"]):
        assert not planted(landing, KEY).scan(text)


def _is_null(x) -> bool:
    return x is None or x is pd.NA or x is pd.NaT or (isinstance(x, (float, np.floating)) and math.isnan(x))


def _aligned(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in an order that does not depend on doubles' last bits: by every non-double column."""
    exact = [c for c in df.columns if not pd.api.types.is_float_dtype(df[c])]
    return df.sort_values(exact or list(df.columns), kind="stable").reset_index(drop=True)


def _differences(local: pd.DataFrame, cluster: pd.DataFrame) -> list:
    if list(local.columns) != list(cluster.columns):
        return [("columns", list(local.columns), list(cluster.columns))]
    if len(local) != len(cluster):
        return [("rows", len(local), len(cluster))]
    local, cluster = _aligned(local), _aligned(cluster)
    out = []
    for col in local.columns:
        for i, (x, y) in enumerate(zip(local[col], cluster[col])):
            if _is_null(x) or _is_null(y):
                same = _is_null(x) and _is_null(y)
            elif isinstance(x, (float, np.floating)):
                same = math.isclose(float(x), float(y), rel_tol=TOLERANCE, abs_tol=TOLERANCE)
            else:
                same = x == y
            if not same:
                out.append((col, i, x, y))
    return out
