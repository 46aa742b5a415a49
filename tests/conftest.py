"""Shared fixtures: one Delta-enabled SparkSession per test session, and a delivery writer."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

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


def pytest_collection_modifyitems(config, items):
    """`make test` runs two pytest-xdist workers (`--dist loadgroup`): keep each module on one worker
    (its module fixtures are built once), and every module that reads the shared `published` run
    on the same worker (a session fixture is built once per worker)."""
    shared = {item.module.__name__ for item in items if "published" in getattr(item, "fixturenames", ())}
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("published" if module in shared else module))
