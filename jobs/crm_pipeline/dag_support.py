"""What the DAG files share, so that each of them is wiring only: the `crm` command lines and the
templates that resolve variables and connections at run time (never at parse time), the task
defaults (retries with back-off, timeouts, the failure alert), the pools that keep one writer per
Delta layer, the delivery sensor, and the Asset the daily ingest emits when months are ready.

Imported when Airflow parses the DAGs: it imports Airflow's SDK and the standard library only;
the pipeline's own modules (Spark, Delta readers) are imported inside the callables, in the worker.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import date, timedelta
from pathlib import Path

from airflow.sdk import Asset, BaseSensorOperator
from airflow.sdk.exceptions import AirflowSkipException

#: every task runs a `crm` entrypoint in its own process: Spark never runs inside the worker
CRM = f"{sys.executable} -m crm_pipeline.cli"
#: the Airflow connection of the Spark cluster (standalone `spark://`, `yarn`, `k8s://`) the tasks
#: are submitted to with spark-submit (SparkSubmitOperator), from the environment of the DAG
#: processor; unset, each task runs its `crm` command with Spark in local mode
SPARK_CONN_ID = os.environ.get("CRM_SPARK_CONN_ID") or None
#: what each task records in crm_ops.pipeline_runs
RUN_ARGS = ("--run-id", "{{ run_id }}", "--dag-id", "{{ dag.dag_id }}", "--task-id", "{{ task.task_id }}")
LAKE = "{{ var.value.crm_lake }}"
LANDING = "{{ var.value.crm_landing }}"
#: the msisdn HMAC key: the password of the connection `crm_msisdn_hmac`
KEY_ENV = {"CRM_MSISDN_HMAC_KEY": "{{ conn.crm_msisdn_hmac.password }}"}
#: the warehouse: the connection `crm_warehouse` when there is one (PostgreSQL: login, host, port,
#: schema = database; its password reaches libpq as PGPASSWORD, masked in logs), else the
#: Variable `crm_warehouse` (a URL, e.g. the embedded duckdb:///... file)
WAREHOUSE = ("{% set c = conn.get('crm_warehouse') %}{{ 'postgresql://%s@%s:%s/%s' % "
             "(c.login, c.host, c.port or 5432, c.schema) if c else var.value.crm_warehouse }}")
WAREHOUSE_ENV = {"PGPASSWORD": "{% set c = conn.get('crm_warehouse') %}{{ c.password or '' if c else '' }}"}
#: the business date of a daily run: the Shanghai day before its logical date (the run of the
#: morning of the 5th loads the 4th)
BUSINESS_DATE = "{{ logical_date.in_timezone('Asia/Shanghai').subtract(days=1).to_date_string() }}"

#: one writer at a time per layer, across DAGs and runs (one slot each; `make setup` creates them,
#: docs/runbook.md says how elsewhere): bronze, silver and rollups; gold, the model registry and
#: the warehouse
SILVER_POOL, GOLD_POOL = "crm_silver_writer", "crm_gold_writer"
POOLS = {SILVER_POOL: "crm ingest and rollup: one writer of bronze, silver and the rollups at a time",
         GOLD_POOL: "crm analyse, train and publish: one writer of gold, the model registry and the warehouse"}

#: emitted by the daily ingest when months are complete and not built, or built from deliveries
#: since replaced; it triggers the monthly analytics (the event's extra names the months and why)
MONTHS_READY = Asset(name="crm_months_ready", uri="crm://lake/gold/months-ready", group="crm")


def feed_names() -> list[str]:
    """The feeds of the input contract (schemas/feeds), by name."""
    from crm_pipeline.settings import resource_dir

    return sorted(p.stem for p in (resource_dir("schemas") / "feeds").glob("*.json"))


#: `tasks` of config/operations.json when it has none: 3 retries, 5 minutes apart, doubling up to an hour
TASK_RETRIES = {"retries": 3, "retry_delay_seconds": 300, "max_retry_delay_seconds": 3600}


def task_retries(path: str | Path | None = None) -> dict:
    """The retry policy of every task: `tasks` of config/operations.json (`CRM_OPERATIONS_CONFIG`
    points elsewhere), each setting defaulting to TASK_RETRIES. A wrong setting fails the DAG's
    import naming the file."""
    import json

    from crm_pipeline.settings import resource_dir

    path = Path(path or os.environ.get("CRM_OPERATIONS_CONFIG") or resource_dir("config") / "operations.json")
    given = json.loads(path.read_text(encoding="utf-8")).get("tasks", {})
    unknown = set(given) - set(TASK_RETRIES)
    if unknown:
        raise ValueError(f"{path}: tasks has unknown setting(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(TASK_RETRIES)}")
    out = {**TASK_RETRIES, **given}
    for key, value in out.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{path}: tasks.{key} must be a whole number from 0, not {value!r}")
    return out


def default_args(timeout: timedelta) -> dict:
    """Task defaults: retries with exponential back-off (`task_retries`), a timeout, the alert."""
    retries = task_retries()
    return {"owner": "data-engineering", "retries": retries["retries"],
            "retry_delay": timedelta(seconds=retries["retry_delay_seconds"]),
            # a multiplier since Airflow 3.3 (True counts as 1: a constant delay): each delay doubles
            "retry_exponential_backoff": 2.0,
            "max_retry_delay": timedelta(seconds=retries["max_retry_delay_seconds"]),
            "execution_timeout": timeout, "on_failure_callback": alert_on_failure}


def alert_on_failure(context) -> None:
    """Every failed try goes through the project's one alert hook (log; webhook or e-mail when
    CRM_ALERT_WEBHOOK / CRM_ALERT_EMAIL are set)."""
    from crm_pipeline.alerts import task_failed

    task_failed(context)


def crm(command: str, *args: str) -> str:
    """The bash command of one `crm` step of a task, each argument quoted for the shell (a
    template is quoted as its rendered value will need)."""
    return " ".join([CRM, command, *(_quoted(a) for a in (*args, *RUN_ARGS))])


def _quoted(arg: str) -> str:
    if re.fullmatch(r"[\w.,:/=+-]+", arg):
        return arg
    return f'"{arg}"' if "'" in arg else f"'{arg}'"


def crm_task(task_id: str, command: str, *args: str, env: dict | None = None, **kwargs):
    """The task running one `crm` step: a BashOperator running it with Spark in local mode, or,
    with CRM_SPARK_CONN_ID set, a SparkSubmitOperator submitting it to that cluster (the same
    command line, the driver in client mode, the Delta and JDBC jars resolved into infra/jars/lib
    shipped with it)."""
    if SPARK_CONN_ID is None:
        return _bash_operator()(task_id=task_id, bash_command=crm(command, *args), env=env, append_env=bool(env),
                                **kwargs)
    return _spark_submit_operator()(
        task_id=task_id, conn_id=SPARK_CONN_ID, application=str(Path(__file__).with_name("cli.py")),
        application_args=[command, *args, *RUN_ARGS], name="{{ dag.dag_id }}.{{ task.task_id }}",
        env_vars={**(env or {}), "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
                  "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        **kwargs)


def _bash_operator():
    from airflow.providers.standard.operators.bash import BashOperator

    return BashOperator


def _spark_submit_operator():
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    class CrmSparkSubmitOperator(SparkSubmitOperator):
        """spark-submit of a `crm` step with the jars resolved at setup, the JVM options of
        SparkSettings (CRM_JAVA_OPTIONS) and the JDK local-mode drivers run on (`spark.java_home`),
        read when the task runs (never while the DAG is parsed)."""

        def execute(self, context):
            from crm_pipeline.settings import SparkSettings
            from crm_pipeline.spark import jar_paths, java_home

            settings = SparkSettings.from_env()
            self.jars = ",".join(jar_paths(settings))
            home = java_home(settings)
            if home:  # the task's own JAVA_HOME, if it sets one, wins
                self.env_vars = {"JAVA_HOME": str(home), **(self.env_vars or {})}
            if settings.java_options:  # the JVM options a local-mode run gives itself
                self.conf = {"spark.driver.extraJavaOptions": settings.java_options,
                             "spark.executor.extraJavaOptions": settings.java_options, **(self.conf or {})}
            return super().execute(context)

    return CrmSparkSubmitOperator


class DeliverySensor(BaseSensorOperator):
    """Waits, in reschedule mode (no worker slot held between looks), for the complete delivery
    (control file written) of one feed for the run's business date, or for the bill on its due
    day. When the delivery falls due and is not there, it alerts once (the alert hook) and keeps
    looking until the feed's `wait_hours` have passed (config/operations.json); then it is skipped,
    naming what is missing, and the ingest goes on with the other feeds. Optional feeds and the
    bill on other days are skipped at once. `CRM_AS_OF` fixes the clock (replays, tests)."""

    template_fields = ("business_date", "landing")
    ui_color = "#e8f0fe"

    def __init__(self, *, feed: str, business_date: str, landing: str, **kwargs) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", 600)
        kwargs.setdefault("timeout", 3 * 24 * 3600)  # a backstop: the feed's wait_hours decide
        super().__init__(**kwargs)
        self.feed, self.business_date, self.landing = feed, business_date, landing

    def poke(self, context) -> bool:
        from crm_pipeline import alerts, orchestration
        from crm_pipeline.status import load_operations_config, now as local_now

        config = load_operations_config()
        what = orchestration.awaited(self.feed, date.fromisoformat(self.business_date), config)
        if isinstance(what, str):
            raise AirflowSkipException(what)
        now = local_now(config)
        first_look = context["ti"].get_first_reschedule_date(context) is None
        previous = None if first_look else now - timedelta(seconds=self.poke_interval)
        state, alert = orchestration.verdict(orchestration.arrived(self.landing, what), what, now, previous)
        if alert:
            message = orchestration.late_message(what, now, self.landing)
            self.log.warning("%s", message)
            alerts.send(f"{what.label} is late", [message, f"run: {context.get('run_id')}"])
        if state == orchestration.GIVE_UP:
            raise AirflowSkipException(f"{what.label}: not delivered by {what.give_up_at:%Y-%m-%d %H:%M} "
                                       f"({config.timezone.key}); the ingest goes on without it")
        if state == orchestration.ARRIVED:
            self.log.info("%s: complete in %s", what.label, self.landing)
        return state == orchestration.ARRIVED


def announce_months(lake: str, outlet_events) -> list[str]:
    """The daily ingest's last task: the months now ready to (re)build become an event of
    MONTHS_READY (triggering the monthly analytics); skipped, with no event, when there are none."""
    from crm_pipeline.orchestration import months_to_build
    from crm_pipeline.settings import LakeLayout

    months = months_to_build(LakeLayout(lake))
    if not months:
        raise AirflowSkipException("no month is newly complete or built from replaced deliveries")
    for month, why in months.items():
        print(f"{month:%Y-%m}: {why}")
    outlet_events[MONTHS_READY].extra = {"months": [m.isoformat() for m in months],
                                         "why": {m.isoformat(): why for m, why in months.items()}}
    return [m.isoformat() for m in months]


def months_of_run(lake: str, params: dict, triggering_asset_events=None) -> str:
    """The `--month` argument of a monthly run (comma-separated first days): the months of `params.months` when given (a
    manual run, a backfill), else the months ready to (re)build now (the trigger's event says
    which were ready when it was emitted; a run started later builds what is ready then).
    Skipped, and the run with it, when there is nothing to build."""
    from crm_pipeline.orchestration import months_to_build
    from crm_pipeline.settings import LakeLayout

    named = [str(m) for m in (params.get("months") or [])]
    if named:
        months = [date.fromisoformat(m if len(m) > 7 else f"{m}-01") for m in named]
    else:
        for asset in triggering_asset_events or {}:
            for event in triggering_asset_events[asset]:
                print(f"triggered by {asset.name}: {event.extra}")
        months = list(months_to_build(LakeLayout(lake)))
    if not months:
        raise AirflowSkipException("no month to build: every complete month is built from the deliveries loaded")
    print("months:", ", ".join(f"{m:%Y-%m}" for m in sorted(set(months))))
    return ",".join(m.isoformat() for m in sorted(set(months)))
