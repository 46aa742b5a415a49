"""Shared fixtures: one Delta-enabled SparkSession per test session, and a delivery writer."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import logging
import os
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

pytest_plugins = ["tests.dag_run"]  # the session's Airflow run (`dag_run`)

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# py4j logs at INFO while the interpreter shuts down, after pytest has closed its capture streams.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from crm_pipeline.settings import SparkSettings
    from crm_pipeline.spark import build_session

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    settings = replace(
        SparkSettings.from_env(), shuffle_partitions=2, driver_memory="4g",
        extra_conf=(("spark.sql.warehouse.dir", str(warehouse)),),
    )
    session = build_session(settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for this test session (tests/pg_server.py)."""
    from tests.pg_server import running

    with running() as server:
        yield server


@pytest.fixture
def pg_database(pg_server, monkeypatch):
    """A fresh database on the session's server, initialised by `crm warehouse init` with a
    password for each role: its admin URL. Roles are cluster-wide, so every database shares them."""
    import uuid

    import psycopg

    from crm_pipeline.publish.postgres import BI, CAMPAIGN, LOADER, init_warehouse, password_setting

    name = f"wh_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.url(database="postgres"), autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    for role in (LOADER, BI, CAMPAIGN):
        monkeypatch.setenv(password_setting(role), f"{role}-pw")
    init_warehouse(pg_server.url(database=name), progress=lambda _: None)
    return pg_server.url(database=name)


def role_url(admin_url: str, role: str) -> str:
    """The URL of `admin_url`'s database for a role set up by the pg_database fixture."""
    from urllib.parse import urlparse

    u = urlparse(admin_url)
    return f"postgresql://{role}:{role}-pw@{u.hostname}:{u.port}{u.path}"


_JOB_GROUPS = itertools.count()


def stages_run(spark, action) -> list:
    """Spark's status of each stage of the jobs `action()` ran (tracked by a job group of their own)."""
    sc = spark.sparkContext
    group = f"stages-run-{next(_JOB_GROUPS)}"
    sc.setJobGroup(group, group)
    try:
        action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    tracker = sc.statusTracker()
    ids = {s for job in tracker.getJobIdsForGroup(group) for s in tracker.getJobInfo(job).stageIds}
    return [info for info in map(tracker.getStageInfo, sorted(ids)) if info is not None]


def shuffles(frame) -> int:
    """Exchanges in `frame`'s physical plan, planned without adaptive execution (which adds its own
    later); a scan of a cached frame is a leaf, its cached plan not counted."""
    from crm_pipeline.spark import session_conf

    def count(node) -> int:
        children = node.children()
        return (node.nodeName() == "Exchange") + sum(count(children.apply(i)) for i in range(children.size()))

    with session_conf(frame.sparkSession, {"spark.sql.adaptive.enabled": "false"}):
        return count(frame._jdf.queryExecution().executedPlan())


def write_delivery(
    landing: Path,
    feed: str,
    day: date,
    files: list[list[str | bytes]],
    encoding: str = "UTF-8",
    gz: bool = False,
    crlf: bool = False,
    control: bool = True,
) -> Path:
    """Write one delivery exactly as the contract says: data files, then the control file.

    `files` holds each data file's lines (str, encoded with `encoding`, or raw bytes).
    """
    d = landing / feed / f"{day:%Y%m%d}"
    d.mkdir(parents=True, exist_ok=True)
    for old in d.iterdir():
        old.unlink()
    codec = {"UTF-8": "utf-8", "GBK": "gbk"}[encoding]
    ctl_lines = []
    for i, lines in enumerate(files, start=1):
        eol = b"\r\n" if crlf else b"\n"
        body = b"".join((ln if isinstance(ln, bytes) else ln.encode(codec)) + eol for ln in lines)
        name = f"{feed.upper()}_{day:%Y%m%d}_{i:03d}.dat" + (".gz" if gz else "")
        data = gzip.compress(body, mtime=0) if gz else body
        (d / name).write_bytes(data)
        rows = sum(1 for ln in body.split(b"\n") if ln.strip())
        ctl_lines.append(f"{name}|{rows}|{len(data)}|{hashlib.md5(data).hexdigest()}|{encoding}")
    if control:
        (d / f"{feed.upper()}_{day:%Y%m%d}.ctl").write_text("\n".join(ctl_lines) + "\n")
    return d


#: The modules of each session-scoped run, by the fixture they use. Under pytest-xdist the modules
#: of one run all go to one worker, so the run is built once (`pytest_xdist_make_scheduler`).
RUN_GROUPS = {
    # the in-process `crm run` of tests/integration/conftest.py
    "published": frozenset({
        "tests/integration/test_run_against_reference.py",
        "tests/integration/test_failures_on_record.py",
        "tests/integration/test_privacy.py",
        "tests/integration/test_generated_ingest.py",
        "tests/integration/test_postgres_publish.py",
        "tests/integration/test_status_of_a_run.py",
        "tests/integration/test_report.py",
    }),
    # the Airflow DAGs' run of tests/dag_run.py, which the cluster run is compared with
    "dag_run": frozenset({
        "tests/dags/test_dags_run.py",
        "tests/integration/test_cluster.py",
    }),
}
GROUP_OF_MODULE = {module: fixture for fixture, modules in RUN_GROUPS.items() for module in modules}

#: scopes that take minutes (measured on 2 cores), longest first; the rest run in collection order
LONG_SCOPES = {
    "published": 6,
    "dag_run": 5,
    "tests/integration/test_bad_input_catalogue.py": 2,
    "tests/integration/test_golden_ingest.py": 1,
}


def pytest_collection_modifyitems(config, items):
    """A module using a session run must be listed in RUN_GROUPS (else the run is built twice)."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        for fixture, modules in RUN_GROUPS.items():
            if fixture in getattr(item, "fixturenames", ()) and module not in modules:
                raise pytest.UsageError(
                    f"{module} uses the `{fixture}` run: add it to RUN_GROUPS[{fixture!r}] in tests/conftest.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`make test` runs two pytest-xdist workers with `--dist loadscope`: each module runs whole
    on one worker (its module fixtures are built once), and the modules of each session run
    (RUN_GROUPS) together on one worker."""
    if config.getvalue("dist") != "loadscope":
        return None
    from collections import OrderedDict

    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # it would start with the modules of most tests

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return GROUP_OF_MODULE.get(module, module)

        def _assign_work_unit(self, node) -> None:
            # longest first, so that neither worker is left with a long module at the end
            self.workqueue = OrderedDict(sorted(self.workqueue.items(), key=lambda kv: -LONG_SCOPES.get(kv[0], 0)))
            super()._assign_work_unit(node)

    return ModuleScheduling(config, log)
