"""DAG integrity: every DAG imports, is wired as the team requires, and does no work at parse time."""

from __future__ import annotations

import ast
import json
import os
from datetime import timedelta
from pathlib import Path

import jinja2
import pendulum
import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
ALLOWED_TOP_LEVEL_IMPORTS = {"__future__", "sys", "datetime", "pendulum", "airflow", "crm_pipeline.dag_support"}
BASH_TASKS = {("crm_daily_ingest", "ingest"), ("crm_daily_ingest", "rollup"),
              ("crm_monthly_analytics", "analyse"), ("crm_monthly_analytics", "train"),
              ("crm_monthly_analytics", "rescore"), ("crm_monthly_analytics", "publish"),
              ("crm_churn_training", "train"), ("crm_churn_training", "rescore"), ("crm_churn_training", "publish"),
              ("crm_maintenance", "maintain_silver"), ("crm_maintenance", "maintain_gold")}


@pytest.fixture(scope="module")
def dagbag():
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"crm_daily_ingest", "crm_monthly_analytics", "crm_churn_training", "crm_maintenance"}


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
            # config/operations.json's `tasks`: 3 retries, 5 minutes apart, doubling up to an hour
            assert (task.retries, task.retry_delay, task.retry_exponential_backoff, task.max_retry_delay) == (
                3, timedelta(minutes=5), 2.0, timedelta(hours=1)), (dag.dag_id, task.task_id)
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
                assert name in ALLOWED_TOP_LEVEL_IMPORTS or name.split(".")[0] in ALLOWED_TOP_LEVEL_IMPORTS, \
                    f"{path.name} imports {name} at top level"
    source = path.read_text().replace("from crm_pipeline.dag_support import", "")
    for forbidden in ("Variable.get", "open(", "SparkSession", "crm_pipeline.", "requests."):
        assert forbidden not in source, f"{path.name} uses {forbidden}"


def test_the_shared_dag_module_imports_airflow_and_the_standard_library_only():
    """crm_pipeline.dag_support is imported at parse time: no Spark, Arrow or Delta readers."""
    import subprocess
    import sys

    code = ("import sys, crm_pipeline.dag_support; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'pyarrow', 'deltalake', 'py4j')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_tasks_run_crm_entrypoints_with_run_metadata(dagbag):
    commands = {(d.dag_id, t.task_id): t.bash_command for d in dagbag.dags.values() for t in d.tasks
                if hasattr(t, "bash_command")}
    assert set(commands) == BASH_TASKS
    subcommand = {"rescore": "analyse --rescore", "maintain_silver": "maintain", "maintain_gold": "maintain"}
    for (dag_id, task_id), cmd in commands.items():
        assert f"-m crm_pipeline.cli {subcommand.get(task_id, task_id)} " in cmd, (dag_id, task_id)
        assert "--run-id '{{ run_id }}'" in cmd


def test_one_writer_per_layer_through_single_slot_pools(dagbag):
    from crm_pipeline.dag_support import GOLD_POOL, POOLS, SILVER_POOL

    pools = {(d.dag_id, t.task_id): t.pool for d in dagbag.dags.values() for t in d.tasks}
    for key in BASH_TASKS:
        silver = key[0] == "crm_daily_ingest" or key[1] == "maintain_silver"
        assert pools[key] == (SILVER_POOL if silver else GOLD_POOL), key
    assert set(POOLS) == {SILVER_POOL, GOLD_POOL}
    makefile = (DAGS.parent / "Makefile").read_text()
    assert all(f"pools set {name} 1" in makefile for name in POOLS)


def test_daily_ingest_waits_for_every_feed_in_reschedule_mode_then_ingests_whatever_came(dagbag):
    dag = dagbag.dags["crm_daily_ingest"]
    sensors = [t for t in dag.tasks if t.task_id.startswith("wait_")]
    feeds = sorted(p.stem for p in (DAGS.parent / "schemas" / "feeds").glob("*.json"))
    assert sorted(t.feed for t in sensors) == feeds
    assert all(t.mode == "reschedule" and t.downstream_task_ids == {"ingest"} for t in sensors)
    assert dag.get_task("ingest").trigger_rule == "all_done"  # a late or failed feed does not hold the others


def test_daily_ingest_announces_the_asset_the_monthly_dag_is_scheduled_on(dagbag):
    from crm_pipeline.dag_support import MONTHS_READY

    daily, monthly = dagbag.dags["crm_daily_ingest"], dagbag.dags["crm_monthly_analytics"]
    announce = daily.get_task("announce_months")
    assert announce.upstream_task_ids == {"rollup"} and not announce.downstream_task_ids
    assert [o.name for o in announce.outlets] == [MONTHS_READY.name]
    assert [a.name for a in monthly.schedule] == [MONTHS_READY.name]


def test_the_monthly_dag_builds_the_months_its_first_task_names(dagbag):
    cmd = dagbag.dags["crm_monthly_analytics"].get_task("analyse").bash_command

    class TI:
        @staticmethod
        def xcom_pull(task_ids):
            return "2026-01-01,2026-02-01" if task_ids == "months" else None

    rendered = jinja2.Template(cmd).render(ti=TI(), run_id="r", dag={"dag_id": "d"}, task={"task_id": "t"},
                                           var={"value": {"crm_lake": "K"}})
    assert """analyse --lake 'K' --month "2026-01-01,2026-02-01" --run-id""" in rendered


def test_monthly_dag_trains_between_analyse_and_publish(dagbag):
    for dag_id, first in (("crm_monthly_analytics", "analyse"), ("crm_churn_training", "train")):
        dag = dagbag.dags[dag_id]
        order = [first]
        while dag.get_task(order[-1]).downstream_task_ids:
            (nxt,) = dag.get_task(order[-1]).downstream_task_ids
            order.append(nxt)
        assert order[-3:] == ["train", "rescore", "publish"], dag_id


def test_training_dag_passes_retrain_from_its_params(dagbag):
    dag = dagbag.dags["crm_churn_training"]
    cmd = dag.get_task("train").bash_command
    ctx = dict(run_id="r", dag={"dag_id": "d"}, task={"task_id": "t"}, var={"value": {"crm_lake": "K"}})
    assert dag.params["retrain"] is True and dag.schedule == "0 10 10 1,4,7,10 *"  # its own schedule, quarterly
    assert '--retrain "yes" ' in jinja2.Template(cmd).render(params={"retrain": True}, **ctx)
    assert '--retrain "no" ' in jinja2.Template(cmd).render(params={"retrain": False}, **ctx)


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
    assert f'--to "{business}" ' in rendered


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
        assert '--warehouse "postgresql://crm_loader@db.example:6432/crm"' in with_conn and "s3cret" not in with_conn
        assert jinja2.Template(task.env["PGPASSWORD"]).render(conn=_Connections(crm_warehouse=pg)) == "s3cret"
        without = jinja2.Template(task.bash_command).render(conn=_Connections(), **ctx)
        assert '--warehouse "duckdb:///w.duckdb"' in without
        assert jinja2.Template(task.env["PGPASSWORD"]).render(conn=_Connections()) == ""


def test_with_a_spark_connection_every_step_is_submitted_to_the_cluster_with_the_same_arguments(dagbag):
    """CRM_SPARK_CONN_ID (the DAG processor's environment) turns every `crm` step into a
    SparkSubmitOperator on that connection, running the same command line; parsed in its own
    process, as the DAG processor would."""
    import subprocess
    import sys

    code = """if True:
        import json, os
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder=os.environ["DAGS"])
        assert not bag.import_errors, bag.import_errors
        print(json.dumps({f"{d.dag_id}.{t.task_id}": [type(t).__name__, getattr(t, "_conn_id", None),
                          getattr(t, "application", None), getattr(t, "application_args", None),
                          sorted(getattr(t, "env_vars", None) or {}), t.pool]
                          for d in bag.dags.values() for t in d.tasks if not t.task_id.startswith("wait_")}))
    """
    env = dict(os.environ, CRM_SPARK_CONN_ID="crm_spark", DAGS=str(DAGS), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    tasks = json.loads(out.stdout.strip().splitlines()[-1])
    bash = {(d.dag_id, t.task_id): t.bash_command for d in dagbag.dags.values() for t in d.tasks
            if hasattr(t, "bash_command")}
    for (dag_id, task_id), command in bash.items():
        kind, conn, application, args, env_names, pool = tasks[f"{dag_id}.{task_id}"]
        assert (kind, conn, pool) == ("CrmSparkSubmitOperator", "crm_spark", dagbag.dags[dag_id].get_task(task_id).pool)
        assert application.endswith("crm_pipeline/cli.py") and Path(application).is_file()
        assert command.split("-m crm_pipeline.cli ", 1)[1] == " ".join(
            a if a.startswith("-") or "{{" not in a else (f'"{a}"' if "'" in a else f"'{a}'") for a in args)
        assert {"PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "PATH"} <= set(env_names)
    assert {"CRM_MSISDN_HMAC_KEY"} <= set(tasks["crm_monthly_analytics.analyse"][4])
    assert tasks["crm_monthly_analytics.months"][0] == "PythonOperator"  # no Spark: stays in the worker


def test_a_submitted_step_runs_on_the_jdk_local_drivers_run_on_unless_the_task_names_its_own(monkeypatch, tmp_path):
    """spark-submit starts the driver from the JDK the setup recorded (`crm_pipeline.spark.java_home`),
    so a submitted step and a local one run on the same JDK; a task's own JAVA_HOME wins."""
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    from crm_pipeline import dag_support
    from crm_pipeline.settings import SparkSettings
    from crm_pipeline.spark import java_home

    submitted = []
    monkeypatch.setattr(SparkSubmitOperator, "execute", lambda self, context: submitted.append(dict(self.env_vars)))
    operator = dag_support._spark_submit_operator()
    own = str(tmp_path / "own-jdk")
    for n, (env, expected) in enumerate((({"PATH": "/usr/bin"}, str(java_home(SparkSettings.from_env()))),
                                         ({"PATH": "/usr/bin", "JAVA_HOME": own}, own))):
        operator(task_id=f"step_{n}", conn_id="crm_spark", application="cli.py", env_vars=env).execute({})
        assert submitted[-1] == {**env, "JAVA_HOME": expected}
