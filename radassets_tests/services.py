"""Real services on loopback for the tests marked ``services`` (make test-services): PostgreSQL from Debian's package.

A plain module, so that any test can start one: ``with postgres_server() as pg: ... pg.url``. The server is a
private cluster, made by ``initdb`` in a fresh temporary folder, listening on 127.0.0.1 only (its unix socket is
in that folder too), and stopped by the pid in its own ``postmaster.pid`` — never by name, so no other
PostgreSQL on the machine is touched.

Where the binaries are missing the test is skipped, with the package to install; with
``RADASSETS_SERVICES_REQUIRED=1`` (CI) it fails instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

# The cluster's superuser (trust authentication on loopback: no password) and the database the tests get.
PG_USER = "radassets"
PG_DATABASE = "radassets"
# initdb and postgres refuse to run as root: as root, the cluster runs as this account (Debian's package creates
# it), else as nobody.
UNPRIVILEGED_USERS = ("postgres", "nobody")


def services_unavailable(reason: str) -> None:
    """Skip the test for a missing service, or fail it where services are required (CI)."""
    if os.environ.get("RADASSETS_SERVICES_REQUIRED") == "1":
        pytest.fail(f"RADASSETS_SERVICES_REQUIRED=1 but {reason}")
    pytest.skip(reason)


def postgres_bin_dir() -> Path | None:
    """The folder of Debian's PostgreSQL server binaries: initdb on PATH, else the newest
    /usr/lib/postgresql/<major>/bin (Debian puts initdb and pg_ctl there, not on PATH)."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    url: str  # postgresql+psycopg2://radassets@127.0.0.1:<port>/radassets
    pid: int  # the postmaster's
    port: int
    root: Path  # the temporary folder: data/ (the cluster), postgres.log, the unix socket

    @property
    def dsn(self) -> str:
        """The same database for psycopg2 itself (libpq takes no SQLAlchemy driver name)."""
        return f"host=127.0.0.1 port={self.port} user={PG_USER} dbname={PG_DATABASE}"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL on 127.0.0.1 with an empty database ``radassets``; stopped and removed at exit.

    Its files are in a fresh folder of the system's temporary directory, not under pytest's ``tmp_path``: run as
    root the server is another user, who cannot enter pytest's private (0700) temporary root."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        services_unavailable("needs Debian's PostgreSQL server (apt-get install postgresql): no initdb on PATH "
                             "or in /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="radassets-postgres-"))
    try:
        if os.geteuid() == 0:
            user = next((u for u in UNPRIVILEGED_USERS if _user_exists(u)), None)
            if user is None:
                services_unavailable(f"running as root, and none of the accounts {UNPRIVILEGED_USERS} exists "
                                     "to run PostgreSQL as (initdb refuses root)")
            shutil.chown(root, user)
            as_user = ["runuser", "-u", user, "--"]
        data, log, port = root / "data", root / "postgres.log", free_port()
        _run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
              "--locale=C"], what="initdb")
        # -w: pg_ctl returns once the server accepts connections. Throwaway data: no fsync.
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
        _run([*as_user, str(bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(log),
              "-o", options], what="pg_ctl start", log=log)
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        postmaster = psutil.Process(pid)
        try:
            server = PostgresServer(f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{port}/{PG_DATABASE}", pid, port, root)
            _create_database(port)
            yield server
        finally:
            _stop(postmaster)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pg_rows(dsn: str, sql: str, params: tuple = ()) -> list[tuple]:
    """The rows of one query, read with psycopg2 (not through Dagster): what a test checks in the database."""
    import psycopg2

    con = psycopg2.connect(dsn)
    try:
        with con.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    finally:
        con.close()


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _run(command: list[str], what: str, log: Path | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
    if done.returncode != 0:
        server_log = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
        raise RuntimeError(f"{what} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
                           f"{server_log}")


def _create_database(port: int) -> None:
    import psycopg2

    con = psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, dbname="postgres")
    try:
        con.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with con.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {PG_DATABASE}")
    finally:
        con.close()


def _stop(postmaster: psutil.Process) -> None:
    """Stop the server by its postmaster's pid: SIGINT is PostgreSQL's fast shutdown (SIGTERM, its smart shutdown,
    would wait for every client to disconnect); SIGKILL if it has not stopped after 30 s. psutil checks that the
    pid is still the same process (its start time) before it signals."""
    with contextlib.suppress(psutil.NoSuchProcess):
        postmaster.send_signal(signal.SIGINT)
        try:
            postmaster.wait(timeout=30)
        except psutil.TimeoutExpired:
            postmaster.kill()
            postmaster.wait(timeout=30)
