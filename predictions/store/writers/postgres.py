"""The direct Postgres writer (psycopg): for a self-hosted Postgres, and CI's end-to-end tests.

Used when SUPABASE_DB_URL is set and SUPABASE_URL is not. Same contract as the Supabase writer:
one insert per batch in one transaction, duplicates on (job_id, step, sample_index) ignored by
ON CONFLICT — on the unique key the migrations add, and on the primary key `id` each row derives
from the three (the platform's table as deployed) —, only the columns the table has, in their types
(predictions/store/tableshape.py, read from the catalog on first use),
errors typed as transient (connection lost: retry later) or permanent (the message says what to
fix). Rows are sanitised here, as the Supabase writer does (predictions/store/sanitize.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_when_event_set, wait_exponential_jitter

from predictions.store.rows import CONFLICT_KEY, ROW_COLUMNS
from predictions.store.sanitize import sanitize_row
from predictions.store.tableshape import MIGRATE_COMMAND, TableShape
from predictions.store.writers.base import PermanentWriteError, TransientWriteError
from trainer.redact import hide

T = TypeVar("T")
log = logging.getLogger(__name__)

TABLE = "training_predictions"
FIX_TABLE = f"table public.training_predictions not found: apply the migrations once: {MIGRATE_COMMAND}"
FIX_PRIVILEGE = ("the database role may not insert into (or read) public.training_predictions: connect "
                 "SUPABASE_DB_URL as a role with the grants of sql/ (the service role or the table's owner)")
FIX_SCHEMA = f"public.training_predictions does not match sql/: apply the migrations once: {MIGRATE_COMMAND}"

#: The table's columns and their types as the catalog formats them ("integer", "double precision").
_COLUMNS = """
select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a
 where a.attrelid = 'public.training_predictions'::regclass and a.attnum > 0 and not a.attisdropped
"""
#: Whether some unique index (a unique constraint, or a primary key) is exactly (job_id, step, sample_index).
_HAS_KEY = """
select exists (
  select 1 from pg_index i
   where i.indrelid = 'public.training_predictions'::regclass and i.indisunique and i.indpred is null
     and (select array_agg(a.attname::text order by a.attname) from pg_attribute a
           where a.attrelid = i.indrelid and a.attnum = any (i.indkey)) = array['job_id', 'sample_index', 'step']
     and i.indnkeyatts = 3)
"""


def _insert_statement(shape: TableShape) -> tuple[sql.Composed, list[str]]:
    """The insert for `shape` and its parameter columns. `on conflict do nothing` without a target
    makes every unique index an arbiter: the key on (job_id, step, sample_index) where the migrations
    made it, and the primary key `id`, which each row derives from the same three (rows.row_id), on
    the platform's table as deployed — so an insert sent twice, or by two writers at once, stores one
    row. Without the key, `where not exists` the same three also skips rows stored earlier under
    random ids (the key's three columns come twice)."""
    columns = (["id"] if shape.derived_ids else []) + [c for c in ROW_COLUMNS if c in shape.columns]
    values = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(shape.columns[c])) for c in columns)
    target = sql.SQL("insert into public.{} ({})").format(
        sql.Identifier(TABLE), sql.SQL(", ").join(map(sql.Identifier, columns)))
    if shape.unique_key:
        return sql.SQL("{} values ({}) on conflict do nothing").format(target, values), columns
    exists = sql.SQL(" and ").join(
        sql.SQL("{} = {}::{}").format(sql.Identifier(c), sql.Placeholder(), sql.SQL(shape.columns[c])) for c in CONFLICT_KEY)
    statement = sql.SQL("{} select {} where not exists (select 1 from public.{} where {}) on conflict do nothing").format(
        target, values, sql.Identifier(TABLE), exists)
    return statement, columns + list(CONFLICT_KEY)


def _classify(e: psycopg.Error) -> Exception:
    """Transient (the connection, the server's state) or permanent (privilege, schema, data)."""
    state = e.sqlstate or ""
    detail = e.diag.message_primary or str(e).strip()
    if state == "42P01":
        return PermanentWriteError(FIX_TABLE)
    if state == "42501":
        return PermanentWriteError(f"{FIX_PRIVILEGE} ({detail})")
    # 42703 a column is missing, 42P10 no unique constraint for ON CONFLICT: an older table.
    if state in ("42703", "42P10"):
        return PermanentWriteError(f"{FIX_SCHEMA} ({detail})")
    if state.startswith("23"):
        return PermanentWriteError(f"a row breaks a constraint of training_predictions ({state}: {detail}); "
                                   "the rows should match predictions/store/rows.py and the table sql/")
    if state.startswith("22"):
        return PermanentWriteError(f"a value does not fit its column ({state}: {detail}); "
                                   "rows must match predictions/store/rows.py; text and floats are sanitised (predictions/store/sanitize.py)")
    # OperationalError covers the connection (08*, no sqlstate at all when the connect fails) and
    # the server's state (57P01 admin shutdown, 57P03 starting up, 57014 statement timeout).
    if isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError)) or state.startswith(("08", "57")):
        return TransientWriteError(f"Postgres unreachable: {detail}")
    return PermanentWriteError(f"Postgres refused the rows ({state or type(e).__name__}): {detail}")


class PostgresWriter:
    """Writes rows with psycopg; (re)connects lazily, so a database that comes back is used again.

    Transient failures are retried here, `max_attempts` in all with jittered backoff; the caller
    (predictions/store/writers/background.py) runs this off the training thread.
    """

    name = "postgres"

    def __init__(
        self,
        db_url: str,
        *,
        connect_timeout_s: float = 10,
        statement_timeout_s: float = 60,
        max_attempts: int = 4,
        backoff_max_s: float = 8,
        max_text_chars: int = 100_000,
    ):
        assert max_attempts >= 1 and max_text_chars > 0
        self._url = db_url
        self.max_text_chars = max_text_chars
        # libpq's connect_timeout is whole seconds and 0 means "wait forever": never round to 0.
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._statement_timeout_ms = int(statement_timeout_s * 1000)
        self._conn: psycopg.Connection | None = None
        self._shape: TableShape | None = None
        self._cancelled = threading.Event()
        # After cancel(): a query is cancelled at once; a connect in progress takes its timeout.
        self.cancel_bound_s = self._connect_timeout + 5
        # Transient failures only (a restart, a dropped connection), bounded: the round is in the
        # spool anyway, and `python entrypoint.py replay` can send it later.
        self._retrying = Retrying(
            retry=retry_if_exception_type(TransientWriteError),
            stop=stop_after_attempt(max_attempts) | stop_when_event_set(self._cancelled),
            wait=wait_exponential_jitter(multiplier=0.5, max=backoff_max_s),
            sleep=self._cancelled.wait,  # cancel() ends a wait between attempts
            reraise=True,
        )

    def __repr__(self) -> str:
        return "PostgresWriter(url=<hidden>)"

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # autocommit: each call opens its own transaction below, and nothing stays idle in one.
            # prepare_threshold=None: Supabase's transaction pooler has no prepared statements.
            self._conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout, prepare_threshold=None
            )
        return self._conn

    def _run(self, fn: Callable[[psycopg.Connection], T]) -> T:
        """`fn(conn)` in one transaction; psycopg errors become typed write errors, URL-free."""
        if self._cancelled.is_set():
            raise TransientWriteError("Postgres: the write was cancelled (the writer is closing)")
        try:
            conn = self._connection()
            with conn.transaction():
                # A lock or a stuck server must not hold the writer thread forever.
                conn.execute(f"set local statement_timeout = {self._statement_timeout_ms}")
                return fn(conn)
        except psycopg.Error as e:
            if self._conn is not None and (self._conn.broken or isinstance(e, psycopg.OperationalError)):
                self._conn.close()
                self._conn = None  # the next call reconnects
            typed = _classify(e)
            raise type(typed)(hide(str(typed), self._url)) from None

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Sanitise, insert one batch in one transaction; rows already stored are left as they are."""
        if not rows:
            return
        clean = [sanitize_row(r, max_text_chars=self.max_text_chars) for r in rows]
        # executemany pipelines the rows: one round trip for the batch, not one per row.
        self._retrying(self._run, lambda conn: self._insert(conn, clean))

    def _insert(self, conn: psycopg.Connection, rows: list[dict[str, Any]]) -> None:
        shape = self._table_shape(conn)
        statement, columns = _insert_statement(shape)
        params = []
        for row in rows:
            adapted = shape.adapt(row)
            params.append([Jsonb(adapted.get(c)) if shape.columns[c] in ("jsonb", "json") and adapted.get(c) is not None
                           else adapted.get(c) for c in columns])
        conn.cursor().executemany(statement, params)

    def _table_shape(self, conn: psycopg.Connection) -> TableShape:
        """The table's columns, types and unique key (read once per writer: one catalog query)."""
        if self._shape is None:
            shape = TableShape(dict(conn.execute(_COLUMNS).fetchall()))
            shape.unique_key = bool(conn.execute(_HAS_KEY).fetchone()[0])
            shape.check_needed()
            self._shape = shape
        return self._shape

    def report(self) -> list[str]:
        """Startup report lines about the table (after preflight): what it lacks, the fix."""
        return self._shape.report() if self._shape is not None else []

    def preflight(self) -> None:
        """Raise PermanentWriteError unless the table is reachable, has the columns rows need and
        this role may insert into it."""

        def check(conn: psycopg.Connection) -> None:
            if conn.execute("select to_regclass('public.training_predictions')").fetchone()[0] is None:
                raise PermanentWriteError(FIX_TABLE)
            # INSERT, and SELECT: the insert's `where not exists` reads the table.
            allowed = conn.execute(
                "select has_table_privilege(current_user, 'public.training_predictions', 'INSERT')"
                " and has_table_privilege(current_user, 'public.training_predictions', 'SELECT')"
            ).fetchone()[0]
            if not allowed:
                raise PermanentWriteError(FIX_PRIVILEGE)
            self._shape = None  # read afresh: the migrations may just have changed it
            self._table_shape(conn)

        self._run(check)

    def cancel(self) -> None:
        """From another thread: cancel the query in flight (libpq's cancel request, made for this)
        and start no other (base.py)."""
        self._cancelled.set()
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe(timeout=self._connect_timeout)
            except psycopg.Error as e:  # the connection is gone already: nothing in flight on it
                log.info(f"predictions: cancelling the Postgres query: {hide(str(e), self._url)}")

    def close(self) -> None:
        """Close the connection; a later write would open a new one."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
