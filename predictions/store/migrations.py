"""Applies sql/*.sql in name order, once, the way the Supabase CLI records them.

Each pending file runs in its own transaction together with its record in
supabase_migrations.schema_migrations (the Supabase CLI's table: version = the file name's
leading timestamp, name = the rest), so a file is either applied and recorded or neither, and
a file the CLI already applied is not applied again. A session advisory lock makes two pods
starting together apply each file once: the second waits, then finds nothing pending.
Afterwards PostgREST is told to reload its schema cache, or a new table would answer 404
through the API until PostgREST restarts.

The URL holds a password: it is never printed, and error messages are scrubbed of it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from trainer.redact import hide

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
#: Any fixed 64-bit number, the same in every pod: the advisory lock's key ("train_pr").
LOCK_KEY = 0x7472_6169_6E5F_7072
CONNECT_TIMEOUT_S = 10

_CREATE_TABLE = (
    "create schema if not exists supabase_migrations;"
    " create table if not exists supabase_migrations.schema_migrations"
    " (version text primary key, statements text[], name text)"
)


class MigrationError(Exception):
    """A migration did not apply; the message names the file and Postgres's error (never the URL)."""


@dataclass
class MigrationResult:
    """What one run did: file names applied now, file names found applied, wall time."""

    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _version_and_name(path: Path) -> tuple[str, str]:
    """`20261122000100_training_predictions.sql` → ("20261122000100", "training_predictions")."""
    version, _, name = path.stem.partition("_")
    return version, name


def _files(sql_dir: Path | None) -> list[Path]:
    return sorted((sql_dir or SQL_DIR).glob("*.sql"))


def _connect(db_url: str) -> psycopg.Connection:
    try:
        # prepare_threshold=None: Supabase's transaction pooler (port 6543) has no prepared statements.
        return psycopg.connect(db_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, prepare_threshold=None)
    except psycopg.Error as e:
        # libpq's message names host, port and user, which is what a person needs to fix it.
        raise MigrationError(f"cannot connect with SUPABASE_DB_URL: {hide(str(e).strip(), db_url)}") from None


def _applied_versions(conn: psycopg.Connection) -> set[str]:
    if conn.execute("select to_regclass('supabase_migrations.schema_migrations')").fetchone()[0] is None:
        return set()
    return {row[0] for row in conn.execute("select version from supabase_migrations.schema_migrations")}


def _describe(e: psycopg.Error, path: Path, sql: str) -> str:
    """`file line N: Postgres's message (SQLSTATE)`: enough to find and fix the statement."""
    diag = e.diag
    where = path.name
    if diag.statement_position:  # 1-based character offset into the file's text
        where += f" line {sql[: int(diag.statement_position)].count(chr(10)) + 1}"
    detail = diag.message_primary or str(e).strip()
    return f"{where}: {detail} ({e.sqlstate or type(e).__name__})"


def pending_migrations(db_url: str, sql_dir: Path | None = None) -> list[str]:
    """File names of `sql_dir` not yet recorded as applied (read-only; takes no lock)."""
    with _connect(db_url) as conn:
        done = _applied_versions(conn)
    return [p.name for p in _files(sql_dir) if _version_and_name(p)[0] not in done]


def apply_migrations(db_url: str, sql_dir: Path | None = None) -> MigrationResult:
    """Apply every pending migration of `sql_dir` (default: the repo's sql/), each once.

    Raises MigrationError naming the file and Postgres's error; files before it stay applied.
    """
    files = _files(sql_dir)
    result, start = MigrationResult(), time.perf_counter()
    with _connect(db_url) as conn:
        # A migration reports what it did with RAISE NOTICE (rows it moved aside, keys it could
        # not validate): those lines belong in the pod's log.
        conn.add_notice_handler(lambda diag: log.info(f"migrations: {diag.message_primary}"))
        # Session-level, not transaction-level: it must span the per-file transactions. Released
        # below, and by Postgres itself if this process dies holding it.
        if not conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
            log.info("migrations: another process is applying them; waiting for it")
            conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute(_CREATE_TABLE)
            done = _applied_versions(conn)
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
                    raise MigrationError(hide(_describe(e, path, sql), db_url)) from None
                result.applied.append(path.name)
                log.info(f"migrations: applied {path.name}")
            if result.applied:
                conn.execute("notify pgrst, 'reload schema'")
        finally:
            if not conn.broken:  # a lost connection has released the lock already
                conn.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
    result.seconds = time.perf_counter() - start
    if result.applied:
        log.info(f"migrations: {len(result.applied)} applied in {result.seconds:.2f}s")
    else:
        log.info(f"migrations: nothing pending ({len(result.already)} already applied; {result.seconds:.2f}s)")
    return result
