"""Applies sql/*.sql in name order, once, the way the Supabase CLI records them.

Each pending file runs in its own transaction together with its record in
supabase_migrations.schema_migrations (the Supabase CLI's table: version = the file name's
leading timestamp, name = the rest), so a file is either applied and recorded or neither, and
a file the CLI already applied is not applied again — unless the table lacks what the files make
(dropped by hand after they ran): then every file runs again, each only adding what is absent.
A session advisory lock makes two pods starting together apply each file once: the second waits
(at most LOCK_WAIT_S), then finds nothing pending. A role that may not do it gets one line naming
the fix (MigrationError), never a traceback.
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

from predictions.store.rows import COLUMN_TYPES
from trainer.redact import hide

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
#: Any fixed 64-bit number, the same in every pod: the advisory lock's key ("train_pr").
LOCK_KEY = 0x7472_6169_6E5F_7072
CONNECT_TIMEOUT_S = 10
#: How long a start waits for another process applying the migrations before it gives up (76).
LOCK_WAIT_S = 300
#: The unique key the contract migration adds (sql/20261130000000_platform_contract.sql).
KEY_NAME = "training_predictions_job_step_sample_key"

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
    repaired: list[str] = field(default_factory=list)  # applied again: the table lacked what they make
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


#: The fix for a role that may not do what a migration does (SQLSTATE 42501).
FIX_PRIVILEGE = ("connect SUPABASE_DB_URL as the database's owner (Supabase: the `postgres` user's connection "
                 "string, Project Settings → Database); this role may not create or change what sql/ makes")


def _describe(e: psycopg.Error, path: Path | None, sql: str = "") -> str:
    """`file line N: Postgres's message (SQLSTATE)[: the fix]`: enough to find and fix the statement."""
    diag = e.diag
    where = path.name if path is not None else "before the first file"
    if diag.statement_position and path is not None:  # 1-based character offset into the file's text
        where += f" line {sql[: int(diag.statement_position)].count(chr(10)) + 1}"
    detail = diag.message_primary or str(e).strip()
    fix = f": {FIX_PRIVILEGE}" if e.sqlstate == "42501" else ""
    return f"{where}: {detail} ({e.sqlstate or type(e).__name__}){fix}"


def _take_lock(conn: psycopg.Connection, wait_s: float) -> None:
    """The session advisory lock, waiting at most `wait_s` for another process holding it (an
    advisory lock is a heavyweight lock: lock_timeout bounds the wait)."""
    if conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()[0]:
        return
    log.info(f"migrations: another process is applying them; waiting for it (at most {wait_s:g} s)")
    conn.execute(f"set lock_timeout = {max(1, int(wait_s * 1000))}")
    try:
        conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
    except psycopg.errors.LockNotAvailable:
        raise MigrationError(
            f"another session has held the migrations' lock for {wait_s:g} s; if no other pod or `migrate` is "
            "running, end the session that holds it: select pg_terminate_backend(pid) from pg_locks "
            f"where locktype = 'advisory' and objid = {LOCK_KEY & 0xFFFFFFFF}") from None
    finally:
        if not conn.broken:
            conn.execute("reset lock_timeout")


def _missing(conn: psycopg.Connection) -> list[str]:
    """What sql/ makes that the live table lacks: the table itself, columns, the unique key."""
    if conn.execute("select to_regclass('public.training_predictions')").fetchone()[0] is None:
        return ["the table public.training_predictions"]
    have = {r[0] for r in conn.execute(
        "select attname from pg_attribute where attrelid = 'public.training_predictions'::regclass"
        " and attnum > 0 and not attisdropped")}
    lacking = [f"column {c}" for c in COLUMN_TYPES if c not in have]
    if not conn.execute("select exists (select 1 from pg_constraint where conname = %s)", (KEY_NAME,)).fetchone()[0]:
        lacking.append(f"the unique key {KEY_NAME}")
    return lacking


def pending_migrations(db_url: str, sql_dir: Path | None = None) -> list[str]:
    """File names of `sql_dir` not yet recorded as applied (read-only; takes no lock)."""
    with _connect(db_url) as conn:
        try:
            done = _applied_versions(conn)
        except psycopg.Error as e:
            raise MigrationError(hide(_describe(e, None), db_url)) from None
    return [p.name for p in _files(sql_dir) if _version_and_name(p)[0] not in done]


def apply_migrations(db_url: str, sql_dir: Path | None = None, *, lock_wait_s: float = LOCK_WAIT_S) -> MigrationResult:
    """Apply every pending migration of `sql_dir` (default: the repo's sql/), each once; and when
    every file is recorded as applied but the table lacks what they make (dropped by hand), apply
    them all again (each only adds what is absent) and say what that cannot bring back.

    Raises MigrationError naming the file, Postgres's error and, for a missing privilege, the fix;
    files before it stay applied. Never another psycopg error.
    """
    files = _files(sql_dir)
    result, start = MigrationResult(), time.perf_counter()
    with _connect(db_url) as conn:
        # A migration reports what it did with RAISE NOTICE (rows it moved aside, keys it could
        # not validate): those lines belong in the pod's log.
        conn.add_notice_handler(lambda diag: log.info(f"migrations: {diag.message_primary}"))
        try:
            # Session-level, not transaction-level: it must span the per-file transactions. Released
            # below, and by Postgres itself if this process dies holding it.
            _take_lock(conn, lock_wait_s)
        except psycopg.Error as e:
            raise MigrationError(hide(_describe(e, None), db_url)) from None
        try:
            _run_files(conn, files, result, db_url, sql_dir is None)
        finally:
            if not conn.broken:  # a lost connection has released the lock already
                conn.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
    result.seconds = time.perf_counter() - start
    if result.applied or result.repaired:
        log.info(f"migrations: {len(result.applied) + len(result.repaired)} applied in {result.seconds:.2f}s")
    else:
        log.info(f"migrations: nothing pending ({len(result.already)} already applied; {result.seconds:.2f}s)")
    return result


def _run_files(conn: psycopg.Connection, files: list[Path], result: MigrationResult, db_url: str,
               repairable: bool) -> None:
    try:
        if conn.execute("select to_regclass('supabase_migrations.schema_migrations')").fetchone()[0] is None:
            conn.execute(_CREATE_TABLE)
        done = _applied_versions(conn)
        # Only this repo's sql/ makes the table: another directory (a test's) is not judged by it.
        missing = _missing(conn) if repairable and done and all(
            _version_and_name(p)[0] in done for p in files) else []
    except psycopg.Error as e:
        raise MigrationError(hide(_describe(e, None), db_url)) from None
    if missing:
        log.info(f"migrations: every file is recorded as applied, but {', '.join(missing)} is missing (dropped?): "
                 "applying sql/ again (each file only adds what is absent)")
    for path in files:
        version, name = _version_and_name(path)
        if version in done and not missing:
            result.already.append(path.name)
            continue
        sql = path.read_text(encoding="utf-8")
        try:
            with conn.transaction():
                conn.execute(sql)  # no parameters: the simple protocol runs the whole file
                if version not in done:
                    conn.execute(
                        "insert into supabase_migrations.schema_migrations (version, statements, name)"
                        " values (%s, %s, %s)",
                        (version, [sql], name),
                    )
        except psycopg.Error as e:
            raise MigrationError(hide(_describe(e, path, sql), db_url)) from None
        (result.repaired if version in done else result.applied).append(path.name)
        log.info(f"migrations: {'applied again' if version in done else 'applied'} {path.name}")
    if missing:
        still = _missing(conn)
        if still:
            raise MigrationError(f"applying sql/ again did not bring back {', '.join(still)}; "
                                 "the table was changed in a way these files do not repair: compare it with sql/")
        log.info(f"migrations: repaired ({', '.join(missing)} is there again). Rows of a dropped table are not "
                 "brought back: replay each job's spool into it (`python entrypoint.py replay`)")
    if result.applied or result.repaired:
        conn.execute("notify pgrst, 'reload schema'")
