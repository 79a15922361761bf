"""A real PostgreSQL server for the tests (a pytest plugin, registered in conftest.py).

testcontainers' PostgresContainer when a Docker engine answers; otherwise the machine's own
server binaries, started in a temporary directory as the `postgres` user (the server refuses to
run as root, and CI runs as root). Password authentication over TCP, as a real deployment has.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

PASSWORD = "pg-test-password"


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:  # noqa: BLE001 — any failure means "no engine here"; we fall back
        return False


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    return Path(found[-1]).parent if found else None


class LocalPostgres:
    """The machine's own PostgreSQL, in a temporary directory, on a free loopback port."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin_dir / tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stdout}{proc.stderr}\n{tail}")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, dbname: str = "postgres", user: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}"

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class ContainerPostgres:
    """PostgreSQL in a container (testcontainers), with the same interface."""

    def __init__(self):
        from testcontainers.postgres import PostgresContainer

        self.container = PostgresContainer("postgres:15", username="postgres", password=PASSWORD).start()
        self.port = int(self.container.get_exposed_port(5432))
        self.host = self.container.get_container_host_ip()

    def start(self) -> None:
        self.container.get_wrapped_container().start()

    def stop(self) -> None:
        self.container.get_wrapped_container().stop()

    def url(self, dbname: str = "postgres", user: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{dbname}"

    def close(self) -> None:
        self.container.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A running server: `.url(dbname)`, `.stop()`, `.start()`."""
    if _docker_answers():
        server = ContainerPostgres()
    else:
        bin_dir = _bin_dir()
        if bin_dir is None:
            pytest.skip("no Docker engine and no PostgreSQL server binaries (apt-get install postgresql)")
        server = LocalPostgres(bin_dir)
    yield server
    server.close()


@pytest.fixture
def pg_db(postgres_server):
    """A fresh, empty database for one test; its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    yield postgres_server.url(name)
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def migrated_db(pg_db):
    """A fresh database with every migration applied."""
    from predictions.migrations import apply_migrations

    apply_migrations(pg_db, log=lambda _m: None)
    return pg_db
