"""A real PostgreSQL server for the tests (a pytest plugin, registered in conftest.py).

testcontainers' PostgresContainer when a Docker engine answers; otherwise the machine's own
server binaries, started in a temporary directory as the `postgres` user (the server refuses to
run as root, and CI runs as root). Password authentication over TCP, as a real deployment has:
URLs look like `postgresql://postgres:pg-test-password@127.0.0.1:PORT/test_ab12…`.

Fixtures: `postgres_server` (session: `.url(dbname)`, `.stop()`, `.start()`, `.stopped()`),
`pg_db` (a fresh database per test; its URL) and `migrated_db` (the same, migrated). A test that
uses any of them is marked `postgres` automatically.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.ports import free_port

PASSWORD = "pg-test-password"
USER = "postgres"


def _docker_answers() -> str | None:
    """None when a Docker engine answers; otherwise why not (for the skip message)."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return None
    except Exception as e:  # noqa: BLE001 — no socket, no permission, no package: all mean "no engine"
        return f"{type(e).__name__}: {e}"


def _bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin (Debian's layout), else wherever pg_ctl is on PATH."""
    def version(binary: str) -> int:
        name = Path(binary).parent.parent.name  # /usr/lib/postgresql/<15>/bin/postgres
        return int(name) if name.isdigit() else -1

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=version)
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def _wait_until_ready(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class _Server:
    """What the tests use: URLs, and stopping / starting the server (same port, same data)."""

    host = "127.0.0.1"
    port: int

    def url(self, dbname: str = "postgres", user: str = USER, password: str = PASSWORD) -> str:
        """A connection URL for `dbname`, with a password, like a deployment's."""
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname}"

    def start(self) -> None: ...

    def stop(self) -> None: ...

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        """The server is down inside the block and up again after it, whatever the block raised."""
        self.stop()
        try:
            yield
        finally:
            self.start()


class LocalPostgres(_Server):
    """The machine's own PostgreSQL, in a temporary directory, on a free loopback port."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0  # root may not run the server; the postgres user may
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_postgres:
            for path in (self.root, pwfile):
                shutil.chown(path, USER, USER)
        # trust on the unix socket (inside root, which only postgres can enter), passwords over TCP.
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        pwfile.unlink()
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", USER, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{tail}")

    def start(self) -> None:
        """Start the server (again), on the same port, with the same data."""
        # fsync off: a test server's data need not survive a power cut, and it makes tests faster.
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut, as in a crash of the database)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class ContainerPostgres(_Server):
    """PostgreSQL in a container (testcontainers), with the same interface."""

    def __init__(self):
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers before the community split
            from testcontainers.postgres import PostgresContainer

        # A fixed host port, so that stop() / start() keeps the URLs the tests already hold.
        self.port = free_port()
        container = PostgresContainer("postgres:15", username=USER, password=PASSWORD)
        self.container = container.with_bind_ports(5432, self.port).start()
        self.host = self.container.get_container_host_ip()

    def start(self) -> None:
        """Start the container again and wait until the server accepts connections."""
        self.container.get_wrapped_container().start()
        _wait_until_ready(self.url())

    def stop(self) -> None:
        """Stop the container (the data stays)."""
        self.container.get_wrapped_container().stop(timeout=10)

    def close(self) -> None:
        self.container.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs a real Postgres carries the `postgres` marker, so `-m "not postgres"` works."""
    for item in items:
        if {"postgres_server", "pg_db", "migrated_db"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[_Server]:
    """A running server for the whole session: `.url(dbname)`, `.stop()`, `.start()`, `.stopped()`."""
    no_docker = _docker_answers()
    if no_docker is None:
        server: _Server = ContainerPostgres()
    else:
        bin_dir = _bin_dir()
        if bin_dir is None:
            pytest.skip(f"no Docker engine ({no_docker}) and no PostgreSQL server binaries "
                        "(apt-get install postgresql)")
        server = LocalPostgres(bin_dir)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_db(postgres_server: _Server) -> Iterator[str]:
    """A fresh, empty database for one test; its URL (dropped afterwards)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield postgres_server.url(name)
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def migrated_db(pg_db: str) -> str:
    """A fresh database with every migration of sql/ applied; its URL."""
    from predictions.store.migrations import apply_migrations

    apply_migrations(pg_db)
    return pg_db
