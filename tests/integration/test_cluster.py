"""`crm run` on a real Spark standalone cluster publishes what the local-mode run publishes, and
the local-mode Airflow run, its tasks killed at every fault point and retried, ends where this
uninterrupted run does.

The cluster is the one infra/spark/standalone.sh starts: a master and two workers, separate JVM
processes bound to 127.0.0.1, from the pyspark distribution's `bin/spark-class`. `crm run` is the
command line in its own process (its driver), pointed at the master with CRM_SPARK_MASTER, on the
landing zone of the session's Airflow run (`dag_run`, tests/dag_run.py: the daily and monthly DAGs
in local mode, 120 subscribers over 34 days, January complete, with a late feed and a
re-delivery; each task killed with SIGKILL at a named fault point and retried by Airflow). The two
runs took different paths to the same deliveries: every lake and warehouse table must hold the
same rows.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from tests.dag_run import KEY
from tests.integration.conftest import warehouse_tables

pytestmark = [pytest.mark.spark, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "spark" / "standalone.sh"
TOLERANCE = 1e-9  # doubles summed in another order on other executors


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


@pytest.fixture(scope="module")
def cluster_run(cluster, dag_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster-run")
    warehouse = root / "warehouse.duckdb"
    # A hundred subscribers, as the DAG run: two shuffle partitions, and the JVMs' quick compiler
    # (C1) only. Its three JVMs (the driver, two executors) each compile Spark's code on two cores,
    # for little work: C2 cost 468 CPU-s for this run where C1 took 342 (docs/benchmarks.md).
    env = dict(os.environ, CRM_SPARK_MASTER=cluster["url"], CRM_DRIVER_MEMORY="1g", CRM_MSISDN_HMAC_KEY=KEY,
               SPARK_LOCAL_IP="127.0.0.1", CRM_SHUFFLE_PARTITIONS="2",
               CRM_JAVA_OPTIONS="-XX:+UseParallelGC -XX:TieredStopAtLevel=1")
    proc = subprocess.run(
        [sys.executable, "-m", "crm_pipeline.cli", "run", "--landing", dag_run[1]["AIRFLOW_VAR_CRM_LANDING"],
         "--lake", str(root / "lake"), "--warehouse", f"duckdb:///{warehouse}"],
        env=env, capture_output=True, text=True, timeout=1500,
    )
    return dict(proc=proc, warehouse=warehouse, local=dag_run[0] / "wh" / "warehouse.duckdb",
                landing=Path(dag_run[1]["AIRFLOW_VAR_CRM_LANDING"]), lake=root / "lake",
                local_lake=Path(dag_run[1]["AIRFLOW_VAR_CRM_LAKE"]), root=dag_run[0])


def test_the_cluster_has_a_master_and_two_workers(cluster):
    status = subprocess.run([str(SCRIPT), "status"], env=cluster["env"], capture_output=True, text=True)
    assert status.returncode == 0
    assert status.stdout.splitlines()[0] == cluster["url"]
    pids = [int(line.split("pid")[1]) for line in status.stdout.splitlines()[1:]]
    assert len(set(pids)) == 3 and os.getpid() not in pids


def test_crm_run_succeeds_against_the_cluster(cluster_run):
    proc = cluster_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "publish: crm.subscriber_month" in proc.stdout


def test_both_workers_ran_the_pipelines_tasks(cluster, cluster_run):
    """Each worker launched an executor for the run, and each executor finished tasks: the work
    was spread over the cluster, not done in the driver."""
    for worker in ("worker-1", "worker-2"):
        logs = list((cluster["state"] / worker).glob("app-*/*/stderr"))
        assert logs, f"{worker} launched no executor"
        finished = sum(p.read_text(errors="replace").count("Finished task") for p in logs)
        assert finished > 0, f"{worker}'s executors finished no task"


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


def test_the_cluster_publishes_what_local_mode_publishes(cluster_run):
    assert cluster_run["proc"].returncode == 0
    local, remote = warehouse_tables(cluster_run["local"]), warehouse_tables(cluster_run["warehouse"])
    assert sorted(remote) == sorted(local)
    assert sum(len(df) for df in local.values()) > 0
    differing = {name: diffs[:5] for name in local if (diffs := _differences(local[name], remote[name]))}
    assert not differing, differing


def test_the_killed_and_retried_airflow_runs_lake_equals_the_uninterrupted_cluster_runs(cluster_run):
    """Crash safety: every fault point killed one try of its task (tests/dag_run.py), and every
    data table of the Airflow run's lake (bronze, silver, quarantine, gold) holds the rows of the
    cluster run's, every column but `run_id`; no delivery was half-loaded or loaded twice. (Its
    warehouse: the test above.)"""
    from crm_pipeline.faults import POINTS
    from tests.dag_run import FAULTS, fired_faults
    from tests.integration.crash import comparable, content, lake_tables, loaded_once

    assert cluster_run["proc"].returncode == 0
    assert fired_faults(cluster_run["root"]) == FAULTS and {f.split(":")[0] for f in FAULTS} == set(POINTS)
    local, remote = lake_tables(cluster_run["local_lake"]), lake_tables(cluster_run["lake"])
    assert sorted(local) == sorted(remote) and len(local) > 30
    differing = {}
    for name in local:
        a, b = (comparable(DeltaTable(str(t[name])).to_pandas()) for t in (local, remote))
        if not any(pd.api.types.is_float_dtype(a[c]) for c in a.columns):
            if content(a) != content(b):
                differing[name] = (content(a), content(b))
        elif diffs := _differences(a, b):
            differing[name] = diffs[:5]
    assert not differing, differing
    loaded = loaded_once(cluster_run["local_lake"])  # each file adds up, each delivery loaded once
    assert len(loaded) > 200 and loaded.equals(loaded_once(cluster_run["lake"]))  # the same deliveries


def test_the_cluster_publishes_the_same_restricted_contacts(cluster_run):
    def contacts(warehouse: Path) -> pd.DataFrame:
        restricted = warehouse.with_name(warehouse.stem + "_restricted.duckdb")
        return warehouse_tables(restricted, "crm_restricted")["contact"]

    local, remote = contacts(cluster_run["local"]), contacts(cluster_run["warehouse"])
    assert len(local) > 0
    pd.testing.assert_frame_equal(local, remote)


def test_the_cluster_runs_output_holds_no_personal_data(cluster_run):
    """Driver and executor output (JVM logs included) of a whole run: no number, name or secret."""
    from tests.integration.pii import planted

    proc = cluster_run["proc"]
    assert proc.stdout and not planted(cluster_run["landing"], KEY).scan([proc.stdout, proc.stderr])


@pytest.mark.submit  # `make submit-test`: past the 30-minute budget of `make test` beside the scenario's kills
def test_a_maintenance_task_submits_its_step_to_the_cluster_through_the_spark_connection(cluster, dag_run, tmp_path):
    """With CRM_SPARK_CONN_ID, the DAGs' `crm` steps are SparkSubmitOperator tasks (every task:
    tests/dags/test_dag_integrity.py): spark-submit, on the connection's master, with the resolved
    jars and the pipeline's JVM options (CRM_JAVA_OPTIONS); here the maintenance DAG's silver step under `airflow
    tasks test`, on a small lake of daily appends. The master registers the application, and the
    tables keep their rows while their small files are compacted."""
    from datetime import date

    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from crm_pipeline.io import delta_rs
    from crm_pipeline.settings import LakeLayout

    lake = LakeLayout(str(tmp_path / "lake"))
    tables = {"silver/cdr_voice": lake.silver("cdr_voice"), "bronze/cdr_voice": lake.bronze("cdr_voice")}
    for day in (1, 2, 3):  # three daily appends to a bronze and a silver table
        for path in tables.values():
            write_deltalake(path, pa.table({"event_date": [date(2026, 3, day)], "n": [day]}), mode="append")
    rows = {t: DeltaTable(p).to_pyarrow_table().sort_by("n") for t, p in tables.items()}
    assert all(len(DeltaTable(p).file_uris()) == 3 for p in tables.values())
    env = dict(dag_run[1], AIRFLOW_VAR_CRM_LAKE=lake.root, CRM_SPARK_CONN_ID="crm_spark", SPARK_LOCAL_IP="127.0.0.1",
               AIRFLOW_CONN_CRM_SPARK=json.dumps({"conn_type": "spark", "host": cluster["url"]}))
    # the cluster run's quick compiler (C1) only, as CRM_JAVA_OPTIONS gives it to the submission
    env["CRM_JAVA_OPTIONS"] = "-XX:+UseParallelGC -XX:TieredStopAtLevel=1"
    run = subprocess.run([str(Path(sys.executable).with_name("airflow")), "tasks", "test", "crm_maintenance",
                          "maintain_silver", "2026-02-08"], env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    output = run.stdout + run.stderr
    assert f"--master {cluster['url']}" in output and "crm_pipeline/cli.py maintain" in output
    assert "spark.executor.extraJavaOptions=-XX:+UseParallelGC -XX:TieredStopAtLevel=1" in output
    registered = (cluster["state"] / "master.log").read_text(errors="replace")
    assert "Registering app crm_maintenance.maintain_silver" in registered
    for t, p in tables.items():
        assert DeltaTable(p).to_pyarrow_table().sort_by("n").equals(rows[t])
        assert len(DeltaTable(p).file_uris()) == 1, t
    steps = [r["message"] for r in delta_rs.read(lake.ops("pipeline_runs"), ["task_id", "message"]).to_pylist()]
    assert len(steps) == 1 and steps[0].startswith("maintained "), steps
