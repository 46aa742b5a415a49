"""DAG integrity: every DAG imports, is wired as the team requires, and does no work at parse time."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import jinja2
import pendulum
import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
ALLOWED_TOP_LEVEL_IMPORTS = {"__future__", "sys", "datetime", "pendulum", "airflow"}


@pytest.fixture(scope="module")
def dagbag():
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"crm_daily_ingest", "crm_monthly_analytics", "crm_churn_training"}


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_file_name_is_its_dag_id(dagbag, path):
    assert path.stem in dagbag.dag_ids


def test_dags_are_tagged_retried_and_single_writer(dagbag):
    for dag in dagbag.dags.values():
        assert dag.tags and "crm" in dag.tags, dag.dag_id
        assert dag.max_active_runs == 1, dag.dag_id
        assert dag.catchup is False, dag.dag_id
        assert dag.doc_md and dag.doc_md.strip(), dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 1 and task.retry_exponential_backoff, (dag.dag_id, task.task_id)
            assert task.execution_timeout is not None, (dag.dag_id, task.task_id)
            assert [f.__name__ for f in _callbacks(task.on_failure_callback)] == ["alert_on_failure"], task.task_id


def _callbacks(callback) -> list:
    return list(callback) if isinstance(callback, (list, tuple)) else [callback] if callback else []


def test_a_failed_task_alerts_through_the_hook(dagbag, monkeypatch, caplog):
    """The DAGs' failure callback reaches crm_pipeline.alerts (logged; no channel configured here)."""
    monkeypatch.delenv("CRM_ALERT_WEBHOOK", raising=False)
    monkeypatch.delenv("CRM_ALERT_EMAIL", raising=False)

    class TaskInstance:
        dag_id, task_id, try_number, log_url = "crm_daily_ingest", "ingest", 2, "http://airflow/log"

    task = dagbag.dags["crm_daily_ingest"].get_task("ingest")
    for callback in _callbacks(task.on_failure_callback):
        callback({"task_instance": TaskInstance(), "run_id": "scheduled__x", "exception": RuntimeError("exit 1")})
    assert "crm_daily_ingest.ingest failed" in caplog.text and "error: exit 1" in caplog.text
    assert "log: http://airflow/log" in caplog.text


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_files_do_no_heavy_imports_or_io_at_parse_time(path):
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for name in names:
                assert name.split(".")[0] in ALLOWED_TOP_LEVEL_IMPORTS, f"{path.name} imports {name} at top level"
    source = path.read_text()
    for forbidden in ("Variable.get", "open(", "SparkSession", "crm_pipeline.", "requests."):
        allowed = source.replace("-m crm_pipeline.cli", "").replace("from crm_pipeline.alerts import", "")
        assert forbidden not in allowed, f"{path.name} uses {forbidden}"


def test_tasks_run_crm_entrypoints_with_run_metadata(dagbag):
    commands = {(d.dag_id, t.task_id): t.bash_command for d in dagbag.dags.values() for t in d.tasks}
    assert set(commands) == {("crm_daily_ingest", "ingest"), ("crm_daily_ingest", "rollup"),
                             ("crm_monthly_analytics", "analyse"), ("crm_monthly_analytics", "train"),
                             ("crm_monthly_analytics", "rescore"), ("crm_monthly_analytics", "publish"),
                             ("crm_churn_training", "train"), ("crm_churn_training", "rescore"),
                             ("crm_churn_training", "publish")}
    subcommand = {"rescore": "analyse --rescore"}
    for (dag_id, task_id), cmd in commands.items():
        assert f"-m crm_pipeline.cli {subcommand.get(task_id, task_id)} " in cmd, (dag_id, task_id)
        assert "--run-id '{{ run_id }}'" in cmd


def test_monthly_dag_trains_between_analyse_and_publish(dagbag):
    for dag_id, first in (("crm_monthly_analytics", "analyse"), ("crm_churn_training", "train")):
        dag = dagbag.dags[dag_id]
        order = [first]
        while dag.get_task(order[-1]).downstream_task_ids:
            (nxt,) = dag.get_task(order[-1]).downstream_task_ids
            order.append(nxt)
        assert order[-3:] == ["train", "rescore", "publish"], dag_id


def test_training_dag_passes_retrain_from_the_run_conf(dagbag):
    cmd = dagbag.dags["crm_churn_training"].get_task("train").bash_command
    ctx = dict(run_id="r", dag={"dag_id": "d"}, task={"task_id": "t"}, var={"value": {"crm_lake": "K"}},
               params={"retrain": False})
    assert "--retrain" in jinja2.Template(cmd).render(dag_run={"conf": {"retrain": True}}, **ctx)
    assert "--retrain" not in jinja2.Template(cmd).render(dag_run={"conf": {}}, **ctx)


@pytest.mark.parametrize(
    "logical, business",
    [
        (pendulum.datetime(2026, 3, 1, 22, 0, tz="UTC"), "2026-03-01"),  # 06:00 Shanghai on 2 March
        (pendulum.datetime(2026, 3, 1, 15, 59, tz="UTC"), "2026-02-28"),  # 23:59 Shanghai on 1 March
        (pendulum.datetime(2026, 3, 1, 16, 0, tz="UTC"), "2026-03-01"),  # midnight Shanghai on 2 March
    ],
)
def test_business_date_is_the_shanghai_day_before_the_logical_date(dagbag, logical, business):
    cmd = dagbag.dags["crm_daily_ingest"].get_task("ingest").bash_command
    rendered = jinja2.Template(cmd).render(
        logical_date=logical, run_id="r", dag={"dag_id": "d"}, task={"task_id": "t"},
        var={"value": {"crm_landing": "L", "crm_lake": "K"}},
    )
    assert f"--to {business} " in rendered


@pytest.mark.parametrize(
    "logical, month",
    [
        (pendulum.datetime(2026, 2, 4, 0, 0, tz="Asia/Shanghai"), "2026-01-01"),  # the scheduled run, 4 Feb
        (pendulum.datetime(2026, 1, 31, 16, 0, tz="UTC"), "2026-01-01"),  # midnight Shanghai on 1 February
        (pendulum.datetime(2026, 1, 31, 15, 59, tz="UTC"), "2025-12-01"),  # still 31 January in Shanghai
    ],
)
def test_the_monthly_dag_requires_the_shanghai_month_before_its_logical_date(dagbag, logical, month):
    cmd = dagbag.dags["crm_monthly_analytics"].get_task("analyse").bash_command
    rendered = jinja2.Template(cmd).render(logical_date=logical, run_id="r", dag={"dag_id": "d"},
                                           task={"task_id": "t"}, var={"value": {"crm_lake": "K"}})
    assert f"--require-month {month} " in rendered


class _Connections:
    """What the `conn` accessor of a template context returns for known and unknown ids."""

    def __init__(self, **conns):
        self.conns = conns

    def get(self, conn_id, default_conn=None):
        return self.conns.get(conn_id, default_conn)


def test_publish_tasks_take_the_warehouse_connection_else_the_variable(dagbag):
    from types import SimpleNamespace

    pg = SimpleNamespace(login="crm_loader", password="s3cret", host="db.example", port=6432, schema="crm")
    for dag_id in ("crm_monthly_analytics", "crm_churn_training"):
        task = dagbag.dags[dag_id].get_task("publish")
        ctx = dict(run_id="r", dag={"dag_id": "d"}, task={"task_id": "t"},
                   var={"value": {"crm_lake": "K", "crm_warehouse": "duckdb:///w.duckdb"}})
        with_conn = jinja2.Template(task.bash_command).render(conn=_Connections(crm_warehouse=pg), **ctx)
        assert "--warehouse 'postgresql://crm_loader@db.example:6432/crm'" in with_conn and "s3cret" not in with_conn
        assert jinja2.Template(task.env["PGPASSWORD"]).render(conn=_Connections(crm_warehouse=pg)) == "s3cret"
        without = jinja2.Template(task.bash_command).render(conn=_Connections(), **ctx)
        assert "--warehouse 'duckdb:///w.duckdb'" in without
        assert jinja2.Template(task.env["PGPASSWORD"]).render(conn=_Connections()) == ""
