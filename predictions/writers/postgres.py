"""The direct Postgres writer (psycopg): for a self-hosted Postgres, and CI's end-to-end tests.

Used when SUPABASE_DB_URL is set and SUPABASE_URL is not. Same contract as the Supabase writer:
one insert per batch, duplicates on (job_id, step, sample_index) ignored, errors typed as
transient (connection lost: retry later) or permanent (what to fix). Rows arrive sanitised.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.types.json import Jsonb
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from predictions.rows import ROW_COLUMNS
from predictions.writers.base import PermanentWriteError, TransientWriteError

TABLE = "training_predictions"
FIX_TABLE = "table training_predictions not found: apply the migrations (set SUPABASE_DB_URL and restart)"
FIX_PRIVILEGE = ("the database role may not insert into training_predictions: use a role with the grants of "
                 "sql/ (the service role or the owner), or apply the migrations")

_INSERT = sql.SQL("insert into public.{} ({}) values ({}) on conflict (job_id, step, sample_index) do nothing").format(
    sql.Identifier(TABLE),
    sql.SQL(", ").join(map(sql.Identifier, ROW_COLUMNS)),
    sql.SQL(", ").join(sql.Placeholder() * len(ROW_COLUMNS)),
)


def _classify(e: psycopg.Error) -> Exception:
    """Transient (connection-level) or permanent (privilege, schema, data), with the fix."""
    state = getattr(e, "sqlstate", None) or ""
    detail = (e.diag.message_primary if getattr(e, "diag", None) else None) or str(e).strip()
    if isinstance(e, (errors.UndefinedTable,)) or state == "42P01":
        return PermanentWriteError(FIX_TABLE)
    if isinstance(e, errors.InsufficientPrivilege) or state == "42501":
        return PermanentWriteError(f"{FIX_PRIVILEGE} ({detail})")
    if isinstance(e, psycopg.OperationalError) or state.startswith(("08", "57P")):
        return TransientWriteError(f"Postgres unreachable: {detail}")
    return PermanentWriteError(f"Postgres refused the rows ({state or type(e).__name__}): {detail}")


class PostgresWriter:
    """Writes rows with psycopg; (re)connects lazily, so a database that comes back is used again."""

    name = "postgres"

    def __init__(self, db_url: str, *, connect_timeout_s: float = 10, max_attempts: int = 4, backoff_max_s: float = 8):
        self._url, self._timeout = db_url, connect_timeout_s
        self._conn: psycopg.Connection | None = None
        # Transient failures only (a restart, a dropped connection), bounded: the round is in the
        # spool anyway, and the writer runs off the training thread.
        self._retrying = Retrying(
            retry=retry_if_exception_type(TransientWriteError),
            stop=stop_after_attempt(max_attempts),
            wait=wait_exponential_jitter(initial=0.5, max=backoff_max_s),
            reraise=True,
        )

    def __repr__(self) -> str:
        return "PostgresWriter(url=<hidden>)"

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._url, connect_timeout=int(self._timeout))
        return self._conn

    def _run(self, fn):
        try:
            conn = self._connection()
            with conn.transaction():
                return fn(conn)
        except psycopg.Error as e:
            if self._conn is not None and (self._conn.broken or isinstance(e, psycopg.OperationalError)):
                self._conn.close()
                self._conn = None  # the next call reconnects
            raise _classify(e) from None

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        params = [
            [Jsonb(row[c]) if c == "validation_errors" and row[c] is not None else row[c] for c in ROW_COLUMNS]
            for row in rows
        ]
        self._retrying(self._run, lambda conn: conn.cursor().executemany(_INSERT, params))

    def preflight(self) -> None:
        """The table is reachable and this role may insert into it."""

        def check(conn):
            if conn.execute("select to_regclass('public.training_predictions')").fetchone()[0] is None:
                raise PermanentWriteError(FIX_TABLE)
            allowed = conn.execute(
                "select has_table_privilege(current_user, 'public.training_predictions', 'INSERT')"
            ).fetchone()[0]
            if not allowed:
                raise PermanentWriteError(FIX_PRIVILEGE)

        self._run(check)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
