"""The session's Airflow scenario: the DAGs under `airflow dags test` over a few days of generated
deliveries, on a fresh SQLite metadata DB, in local mode, under a fixed clock (`CRM_AS_OF`, the
time of each run), as an operator would live them and as docs/runbook.md tells them to act:

1. 4 February, 09:00: the daily ingest for 3 February. The ticket deliveries of 1-3 February are
   late (held back): the ticket sensor alerts and gives up, the other feeds load, January is not
   complete (it waits for those days), nothing is announced.
2. 11:00: the late tickets have landed, and the recharge delivery of 20 January was re-delivered,
   one record short; the operator reruns the day (the runbook's rerun): the ingest loads both,
   January is complete (late) and announced; the monthly analytics (asset-triggered, run
   directly) build and publish it.

The tasks' processes are killed with SIGKILL at every named fault point (`crm_pipeline.faults`,
FAULTS), once each, as a lost machine or the OOM killer would: the first day's ingest while a Spark
task verifies a file, after a bronze commit and after a silver commit; the rerun's rollup between
its two tables; the analyse after the month's first gold table; the publish inside its
transaction. Airflow retries each task (the retry policy of config/operations.json, with a
one-second delay here) until it finishes; the cluster test's uninterrupted `crm run` of the same
landing zone ends with every lake and warehouse table equal in content
(tests/integration/test_cluster.py). Each point is armed where it comes early in its task (a
killed try is work done again): `make crash-test` kills a whole chain's steps later in their work
(the re-delivery's commits, the analyse between two marts; docs/data-quality.md).

A re-delivery of a month already built is announced again and rebuilt (tests/unit/
test_orchestration.py; the restatement end to end: tests/integration/test_run_against_reference.py).
The DAG tests check the wiring and output of each step; the cluster test runs `crm run` on the
final landing zone against a standalone cluster and compares the warehouse tables with this run's.
Registered as a plugin in tests/conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from crm_pipeline.generate import GeneratorConfig, generate

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
KEY = "dag-test-key"  # the msisdn HMAC key, from the Airflow connection crm_msisdn_hmac
LATE = [("ticket", date(2026, 2, d)) for d in (1, 2, 3)]  # held back on the first morning
REDELIVERED = ("recharge", date(2026, 1, 20))  # re-delivered before the rerun, one record short

#: (name, DAG, logical date, CRM_AS_OF, faults): the scenario's runs, in order, and the fault points
#: (CRM_FAULT) armed in their tasks, each killing one try: the first ingest's first three, the
#: rerun's rollup's first; the analyse's and the publish's first
STEPS = [
    ("daily-1", "crm_daily_ingest", "2026-02-04", "2026-02-04T09:00", "verify,bronze:1,silver:1"),  # 2026-02-03
    ("daily-1-rerun", "crm_daily_ingest", "2026-02-04", "2026-02-04T11:00", "rollup"),  # the same day, run again
    ("monthly-1", "crm_monthly_analytics", "2026-02-04", "2026-02-04T11:30", "gold:1,publish:2"),
]
FAULTS = sorted(f for *_, faults in STEPS if faults for f in faults.split(","))


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory):
    from crm_pipeline.dag_support import POOLS

    root = tmp_path_factory.mktemp("airflow")
    landing = root / "landing"
    # 34 days from January 1st: January's bill (Feb 2) and its late-CDR days (Feb 1-3) are in. Too
    # short for a churn model (tests/unit/test_churn.py covers training and the honest-scoring rule;
    # `crm demo` the whole flow on 8 months): here the DAGs' wiring is what is tested.
    generate(GeneratorConfig(landing=landing, subscribers=120, start=date(2026, 1, 1), days=34, seed=9,
                             progress="none"))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(root / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_CRM_LANDING": str(landing),
        "AIRFLOW_VAR_CRM_LAKE": str(root / "lake"),
        "AIRFLOW_VAR_CRM_WAREHOUSE": f"duckdb:///{root / 'wh' / 'warehouse.duckdb'}",
        "AIRFLOW_CONN_CRM_MSISDN_HMAC": json.dumps({"conn_type": "generic", "password": KEY}),
        "CRM_SHUFFLE_PARTITIONS": "2",  # a hundred subscribers: as the in-process test session
        "CRM_OPERATIONS_CONFIG": str(_operations_config(root)),
    }
    for name in ("CRM_MSISDN_HMAC_KEY", "CRM_AS_OF", "CRM_ALERT_WEBHOOK", "CRM_ALERT_EMAIL", "CRM_FAULT",
                 "CRM_FAULT_ONCE", "CRM_FAULT_GROUP"):
        env.pop(name, None)
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    for pool, description in POOLS.items():
        subprocess.run([AIRFLOW, "pools", "set", pool, "1", description], env=env, check=True, capture_output=True)
    return root, env


def _operations_config(root: Path) -> Path:
    """The repository's config/operations.json, its tasks retried one second after a failure."""
    config = json.loads((REPO / "config" / "operations.json").read_text(encoding="utf-8"))
    config["tasks"] = dict(config["tasks"], retry_delay_seconds=1, max_retry_delay_seconds=2)
    path = root / "operations.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def fired_faults(root: Path) -> list[str]:
    """The fault points that killed a task of the scenario."""
    from crm_pipeline.faults import fired

    return fired(root / "faults")


def dags_test(env, dag_id: str, logical_date: str, *args: str, as_of: str | None = None,
              faults: str | None = None) -> subprocess.CompletedProcess:
    """`airflow dags test`; `faults` arms those fault points in its tasks, each to kill one try."""
    env = dict(env, **({"CRM_AS_OF": as_of} if as_of else {}))
    if faults:
        env.update(CRM_FAULT=faults, CRM_FAULT_ONCE=str(Path(env["AIRFLOW_HOME"]).parent / "faults"))
    return subprocess.run([AIRFLOW, "dags", "test", dag_id, logical_date, *args], env=env, capture_output=True,
                          text=True, timeout=900)


def query(root: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(root / "wh" / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def airflow_query(root: Path, sql: str) -> list[tuple]:
    """The Airflow metadata DB of the scenario (SQLite)."""
    import sqlite3

    con = sqlite3.connect(str(root / "home" / "airflow.db"))
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _hold(landing: Path, held: Path, feed: str, day: date) -> None:
    (held / feed).mkdir(parents=True, exist_ok=True)
    shutil.move(str(landing / feed / f"{day:%Y%m%d}"), str(held / feed / f"{day:%Y%m%d}"))


def _land(landing: Path, held: Path, feed: str, day: date) -> None:
    shutil.move(str(held / feed / f"{day:%Y%m%d}"), str(landing / feed / f"{day:%Y%m%d}"))


def _redeliver_one_record_short(landing: Path, feed: str, day: date) -> None:
    """The day's delivery again, its last record left out, as one file under a new control file."""
    import gzip

    from crm_pipeline.ingest.landing import discover
    from tests.conftest import write_delivery

    (delivery,) = discover(str(landing), [feed], day, day)
    lines: list[bytes] = []
    for entry in delivery.entries:
        data = (Path(delivery.directory) / entry.file_name).read_bytes()
        lines += [ln.rstrip(b"\r") for ln in (gzip.decompress(data) if entry.gzipped else data).split(b"\n") if ln.strip()]
    write_delivery(landing, feed, day, [lines[:-1]], encoding=delivery.entries[0].encoding)


@pytest.fixture(scope="session")
def dag_run(airflow_env):
    """The scenario's runs (STEPS); returns (root, env) once every run has passed, its killed tries
    retried. Each run's output is kept in <root>/steps/<name>.txt."""
    root, env = airflow_env
    landing, held = Path(env["AIRFLOW_VAR_CRM_LANDING"]), root / "held"
    for feed, day in LATE:
        _hold(landing, held, feed, day)
    (root / "steps").mkdir()
    for name, dag_id, logical, as_of, faults in STEPS:
        if name == "daily-1-rerun":
            for feed, day in LATE:
                _land(landing, held, feed, day)
            _redeliver_one_record_short(landing, *REDELIVERED)
        run = dags_test(env, dag_id, logical, as_of=as_of, faults=faults)
        (root / "steps" / f"{name}.txt").write_text(run.stdout + run.stderr)
        assert run.returncode == 0, f"{name}:\n{run.stdout[-3000:]}{run.stderr[-3000:]}"
        # the tries on record now: a later `dags test` of the same logical date replaces the DAG run
        (root / "steps" / f"{name}.tries.json").write_text(json.dumps({table: airflow_query(
            root, f"SELECT dag_id, run_id, task_id, try_number, state FROM {table}")
            for table in ("task_instance_history", "task_instance")}))
    return root, env


def task_tries(root: Path) -> tuple[set[tuple], dict[tuple, tuple]]:
    """What Airflow had on record after each run of the scenario: every earlier try of a task,
    (dag, run, task, try, state), and each task's last try, (dag, run, task) -> (try, state)."""
    earlier: set[tuple] = set()
    last: dict[tuple, tuple] = {}
    for name, *_ in STEPS:
        record = json.loads((root / "steps" / f"{name}.tries.json").read_text())
        earlier |= {tuple(r) for r in record["task_instance_history"]}
        last.update({(dag, run, task): (tries, state) for dag, run, task, tries, state in record["task_instance"]})
    return earlier, last


def step_output(root: Path, name: str) -> str:
    return (root / "steps" / f"{name}.txt").read_text()
