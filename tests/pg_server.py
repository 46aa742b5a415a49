"""A throwaway PostgreSQL server for the warehouse tests: Debian's server binaries
(`infra/postgres/install.sh`, run by `make setup`), a fresh cluster in a temporary folder,
listening on 127.0.0.1 on a free port with password (SCRAM) authentication, stopped and
removed at the end of the test session. Run as root, the server runs as the `postgres` user
(PostgreSQL refuses root)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ADMIN, ADMIN_PASSWORD = "crm_admin", "admin-test-password"


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    database: str

    def url(self, user: str = ADMIN, password: str | None = ADMIN_PASSWORD, database: str | None = None) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@{self.host}:{self.port}/{database or self.database}"


def bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql: run infra/postgres/install.sh "
                           "(make setup does) or install Debian's postgresql package")
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def running(database: str = "crm") -> Iterator[Server]:
    """Start a fresh server with an admin role `crm_admin` (superuser) and an empty database."""
    bindir = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="crm-pg-"))
    data, pwfile = root / "data", root / "pw"
    pwfile.write_text(ADMIN_PASSWORD + "\n")
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        os.chown(root, pg.pw_uid, pg.pw_gid)
        os.chown(pwfile, pg.pw_uid, pg.pw_gid)
    port = _free_port()
    run = dict(check=True, capture_output=True, text=True)
    try:
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", ADMIN, "--pwfile", str(pwfile),
                                        "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"]), **run)
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
        subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                                        "-o", options, "-w", "-t", "60", "start"]), **run)
        server = Server("127.0.0.1", port, database)
        import psycopg

        with psycopg.connect(server.url(database="postgres"), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{database}"')
        yield server
    except subprocess.CalledProcessError as exc:
        log = root / "server.log"
        raise RuntimeError(f"{' '.join(exc.cmd)} failed: {exc.stderr}"
                           f"{log.read_text() if log.exists() else ''}") from None
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
