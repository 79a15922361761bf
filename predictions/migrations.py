"""Applies sql/*.sql in name order, once, the way the Supabase CLI records them.

Each pending file runs in its own transaction together with its record in
supabase_migrations.schema_migrations, so a file is either applied and recorded or neither. A
session advisory lock makes two pods starting together apply each file once: the second waits,
then finds nothing pending. Afterwards PostgREST is told to reload its schema cache, or the new
table would answer 404 through the API until its next restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import psycopg

SQL_DIR = Path(__file__).resolve().parents[1] / "sql"
#: Any fixed 64-bit number, the same in every pod: the advisory lock's key.
LOCK_KEY = 0x7472_6169_6E5F_7072  # "train_pr"
CONNECT_TIMEOUT_S = 10


class MigrationError(Exception):
    """A migration did not apply; the message names the file and Postgres's error (no URL)."""


@dataclass
class MigrationResult:
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _version_and_name(path: Path) -> tuple[str, str]:
    """`20261122000100_training_predictions.sql` → ("20261122000100", "training_predictions")."""
    version, _, name = path.stem.partition("_")
    return version, name


def _connect(db_url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(db_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.Error as e:
        # psycopg's message names host, port and user — never the password.
        raise MigrationError(f"cannot connect with SUPABASE_DB_URL: {str(e).strip()}") from None


def apply_migrations(db_url: str, sql_dir: Path | None = None, *, log: Callable[[str], None] = print) -> MigrationResult:
    """Apply every pending migration of `sql_dir` (default: the repo's sql/)."""
    files = sorted((sql_dir or SQL_DIR).glob("*.sql"))
    result, start = MigrationResult(), time.perf_counter()
    with _connect(db_url) as conn:
        conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(
                "create schema if not exists supabase_migrations;"
                "create table if not exists supabase_migrations.schema_migrations"
                " (version text primary key, statements text[], name text)"
            )
            done = {row[0] for row in conn.execute("select version from supabase_migrations.schema_migrations")}
            for path in files:
                version, name = _version_and_name(path)
                if version in done:
                    result.already.append(path.name)
                    continue
                sql = path.read_text(encoding="utf-8")
                try:
                    with conn.transaction():
                        conn.execute(sql)  # no parameters: the simple protocol runs the whole file
                        conn.execute(
                            "insert into supabase_migrations.schema_migrations (version, statements, name)"
                            " values (%s, %s, %s)",
                            (version, [sql], name),
                        )
                except psycopg.Error as e:
                    detail = e.diag.message_primary or str(e).strip()
                    raise MigrationError(f"{path.name}: {detail}") from None
                result.applied.append(path.name)
                log(f"migrations: applied {path.name}")
            if result.applied:
                conn.execute("notify pgrst, 'reload schema'")
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
    result.seconds = time.perf_counter() - start
    if result.applied:
        log(f"migrations: {len(result.applied)} applied in {result.seconds:.2f}s")
    else:
        log(f"migrations: nothing pending ({len(result.already)} already applied; {result.seconds:.2f}s)")
    return result
