"""`entrypoint.py diagnose`: why a job's predictions do, or do not, reach their owner.

The checks run in the order a missing prediction is best explained: the configuration, the
storage mode and the variables behind it, the key's role, the table and its columns, Row Level
Security and the owner's read policy, the unique key, the Realtime publication, the job's rows
by round against the local spool, and the newest round's time. Each is pass / warn / fail (or
skip, when an earlier failure makes it moot) with the fix. On the platform's table as deployed
(none of this image's additions) the predictions still reach the owner: what it lacks is a
warning with `migrate` as its fix, and the exit code is 0 when nothing failed. The catalog is read with SQL when
SUPABASE_DB_URL is set; through the Supabase API alone, what PostgREST cannot show is a warning
that says how to check it. No secret is ever printed: database errors go through `hide` (trainer/redact.py).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from predictions.report.history import spool_rows
from predictions.report.sources import SourceError, supabase_rows
from predictions.store.keys import key_role
from predictions.store.rows import NEEDED_COLUMNS, ROW_COLUMNS
from predictions.store.tableshape import MIGRATE_COMMAND
from trainer.config.errors import ConfigError
from trainer.config.exits import EXIT_CHECK_FAILED, EXIT_OK
from trainer.config.load import load_config
from trainer.redact import hide

log = logging.getLogger(__name__)

TABLE = "training_predictions"
UNIQUE_KEY = "training_predictions_job_step_sample_key"
FIX_MIGRATE = (f"apply the migrations once: {MIGRATE_COMMAND} (or run the files of sql/ in order in the "
               "Supabase SQL editor)")
FIX_POLICY = ('create policy "Users can view their own predictions" on public.training_predictions for select '
              "to authenticated using ((select auth.uid()) = user_id); grant select on public.training_predictions "
              "to authenticated (sql/ does both)")
FIX_REALTIME = "alter publication supabase_realtime add table public.training_predictions; (sql/ does it)"
NO_SQL = "set SUPABASE_DB_URL (Project Settings → Database → connection string) to check it, or look in the dashboard"


@dataclass
class Finding:
    check: str
    status: str  # "pass" | "warn" | "fail" | "skip"
    detail: str
    fix: str | None = None


class Diagnosis:
    """The findings so far; `ok` only when every check passed."""

    def __init__(self):
        self.findings: list[Finding] = []

    def add(self, check: str, status: str, detail: str, fix: str | None = None) -> Finding:
        finding = Finding(check, status, detail, fix)
        self.findings.append(finding)
        log.info(f"[{status.upper():4}] {check}: {detail}")
        if fix and status != "pass":
            log.info(f"       fix: {fix}")
        return finding

    @property
    def ok(self) -> bool:
        """Nothing failed: a warning says what could be better (the UI's live stream on a plain
        PostgreSQL, the added columns on the platform's table) while the predictions reach the owner."""
        return bool(self.findings) and all(f.status != "fail" for f in self.findings)


# -- the catalog, by SQL or through PostgREST --------------------------------------------------

class SqlCatalog:
    """Catalog queries over a psycopg connection (SUPABASE_DB_URL)."""

    def __init__(self, conn):
        self.conn = conn

    def one(self, query: str, *params):
        return self.conn.execute(query, params).fetchone()

    def columns(self) -> set[str] | None:
        if self.one("select to_regclass('public.training_predictions')")[0] is None:
            return None
        rows = self.conn.execute("select column_name from information_schema.columns "
                                 "where table_schema = 'public' and table_name = %s", (TABLE,)).fetchall()
        return {r[0] for r in rows}

    def rows(self, job_id: str, user_id: str | None) -> tuple[list[dict[str, Any]], int]:
        """(the job's rows as the owner sees them: step, created_at; rows of the job under another owner)."""
        found = self.conn.execute(f"select step, sample_index, created_at, user_id::text from public.{TABLE} "
                                  "where job_id = %s", (job_id,)).fetchall()
        mine = [{"step": s, "sample_index": i, "created_at": t} for s, i, t, u in found if user_id in (None, u)]
        return mine, len(found) - len(mine)


def _rest_columns(url: str, key: str, http) -> set[str] | None:
    """The table's columns from PostgREST's OpenAPI description (GET /rest/v1/)."""
    response = http.get(f"{url.rstrip('/')}/rest/v1/", headers={"apikey": key, "Authorization": f"Bearer {key}"})
    response.raise_for_status()
    definition = response.json().get("definitions", {}).get(TABLE)
    return None if definition is None else set(definition.get("properties", {}))


# -- the checks --------------------------------------------------------------------------------

def _storage(d: Diagnosis, cfg) -> None:
    env = cfg.env
    names = ("SUPABASE_URL", "SUPABASE_SERVICE_KEY", "SUPABASE_ANON_KEY", "SUPABASE_DB_URL", "JOB_ID", "USER_ID")
    set_ = [n for n in names if getattr(env, n, None)]
    detail = f"{cfg.storage}: {cfg.storage_reason} (set: {', '.join(set_) or 'none'})"
    if cfg.storage == "local":
        d.add("storage mode", "warn", detail + "; predictions stay in OUTPUT_DIR, the platform never sees them",
              "set SUPABASE_URL and SUPABASE_SERVICE_KEY (or SUPABASE_DB_URL), JOB_ID and USER_ID")
    else:
        d.add("storage mode", "pass", detail)


def _key_role(d: Diagnosis, cfg, sql: SqlCatalog | None) -> bool:
    """The Supabase key's role (read from the key), or the Postgres login's; False when the key
    is one the API would show a different database to (anon), so checking on through it misleads."""
    if cfg.storage == "supabase":
        role = key_role(cfg.secrets.supabase_service_key.get_secret_value())
        anon = cfg.secrets.supabase_anon_key
        if anon is not None and anon.get_secret_value() == cfg.secrets.supabase_service_key.get_secret_value():
            role = "anon"
        if role == "service_role":
            d.add("key role", "pass", "SUPABASE_SERVICE_KEY acts as service_role (it bypasses RLS to write)")
            return True
        d.add("key role", "fail" if role else "warn",
              f"SUPABASE_SERVICE_KEY acts as {role or 'an unrecognised role'}: "
              + ("RLS lets it insert nothing" if role else "it may not be a Supabase key"),
              "set SUPABASE_SERVICE_KEY to the service_role key (Project Settings → API → service_role), not the anon key")
        return role is None
    user, bypass, superuser = sql.one("select current_user, rolbypassrls, rolsuper from pg_roles where rolname = current_user")
    if bypass or superuser:
        d.add("key role", "pass", f"SUPABASE_DB_URL connects as {user}, which bypasses RLS")
    else:
        d.add("key role", "warn", f"SUPABASE_DB_URL connects as {user}, which RLS applies to: it writes only with "
              "an insert policy or as the table's owner", "connect as postgres or a role with bypassrls")
    return True


def _table(d: Diagnosis, columns: set[str] | None) -> bool:
    """The table, and the columns: those every row needs (FAIL without them), and those this image
    adds (WARN: the platform's table as deployed lacks them; rows are stored without them)."""
    if columns is None:
        d.add("table", "fail", f"public.{TABLE} does not exist (or the API does not expose it)", FIX_MIGRATE)
        return False
    needed = [c for c in NEEDED_COLUMNS if c not in columns]
    if needed:
        d.add("table", "fail", f"public.{TABLE} lacks columns every row needs: {', '.join(needed)}", FIX_MIGRATE)
        return False
    missing = [c for c in ROW_COLUMNS if c not in columns]
    if missing:
        d.add("table", "warn", f"public.{TABLE} lacks {len(missing)} column(s) this image writes: {', '.join(missing)}; "
              "rows are stored without them (their values stay in the local spool)", FIX_MIGRATE)
    else:
        d.add("table", "pass", f"public.{TABLE} has every column the rows need ({len(ROW_COLUMNS)})")
    return True


def _policies(d: Diagnosis, sql: SqlCatalog | None, job_id: str, user_id: str | None) -> None:
    if sql is None:
        d.add("row level security", "warn", "the Supabase API does not show policies", NO_SQL)
        return
    if not sql.one("select relrowsecurity from pg_class where oid = 'public.training_predictions'::regclass")[0]:
        d.add("row level security", "fail", "RLS is off: every API key could read every job's predictions",
              "alter table public.training_predictions enable row level security; " + FIX_POLICY)
        return
    policies = sql.conn.execute(
        "select policyname, roles::text[], qual from pg_policies where schemaname = 'public' and tablename = %s "
        "and cmd in ('SELECT', 'ALL') and permissive = 'PERMISSIVE'", (TABLE,)).fetchall()
    owner = [name for name, roles, qual in policies
             if qual and "auth.uid()" in qual and "user_id" in qual and {"authenticated", "public"} & set(roles)]
    if not owner:
        d.add("row level security", "fail", "RLS is on but no policy lets the owner read their rows "
              "(the platform's UI would show nothing)", FIX_POLICY)
        return
    readable = _owner_sees(sql, job_id, user_id)
    if readable is not None and readable[0] < readable[1]:
        d.add("row level security", "fail", f"as the owner, {readable[0]} of the job's {readable[1]} rows are "
              f"readable (policy {owner[0]!r})", FIX_POLICY)
        return
    seen = "" if readable is None else f"; the owner reads all {readable[1]} rows of the job"
    d.add("row level security", "pass", f"RLS on; the owner reads through policy {owner[0]!r}{seen}")


def _owner_sees(sql: SqlCatalog, job_id: str, user_id: str | None) -> tuple[int, int] | None:
    """(rows the owner reads under RLS, rows of the job that are theirs), or None if untestable."""
    import psycopg

    if user_id is None or sql.one("select 1 from pg_roles where rolname = 'authenticated'") is None:
        return None
    conn = sql.conn
    theirs = conn.execute(f"select count(*) from public.{TABLE} where job_id = %s and user_id = %s",
                          (job_id, user_id)).fetchone()[0]
    with conn.transaction(force_rollback=True):  # the role switch ends with the transaction
        try:
            conn.execute("set local role authenticated")
        except psycopg.errors.InsufficientPrivilege:
            return None  # this login may not act as authenticated: the policy was checked above
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("set local role authenticated")
            claims = json.dumps({"sub": user_id, "role": "authenticated"})
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
            seen = conn.execute(f"select count(*) from public.{TABLE} where job_id = %s", (job_id,)).fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        return 0, theirs  # no select grant: the owner reads nothing
    return seen, theirs


def _unique(d: Diagnosis, sql: SqlCatalog | None) -> None:
    """The key on (job_id, step, sample_index), or the platform's uuid primary key `id`, which each
    row derives from the same three (predictions/store/rows.row_id): either makes a write idempotent."""
    if sql is None:
        d.add("unique key", "warn", f"the Supabase API does not show constraints ({UNIQUE_KEY}); without it rows "
              "are still stored once through their derived primary key `id`", NO_SQL)
    elif sql.one("select 1 from pg_constraint where conname = %s and conrelid = 'public.training_predictions'::regclass",
                 UNIQUE_KEY) is not None:
        d.add("unique key", "pass", f"{UNIQUE_KEY} on (job_id, step, sample_index)")
    elif sql.one("select 1 from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = i.indkey[0] "
                 "where i.indrelid = 'public.training_predictions'::regclass and i.indisprimary and i.indnkeyatts = 1 "
                 "and a.attname = 'id' and a.atttypid = 'uuid'::regtype") is not None:
        d.add("unique key", "warn", f"no {UNIQUE_KEY} (the platform's table as deployed): each row's primary key `id` "
              "is derived from (job_id, step, sample_index), so a retried write still stores it once; the key also "
              "guards rows other writers insert", FIX_MIGRATE)
    else:
        d.add("unique key", "fail", f"neither {UNIQUE_KEY} nor a uuid primary key `id`: a retried write can store a "
              "row twice", FIX_MIGRATE)


def _realtime(d: Diagnosis, sql: SqlCatalog | None) -> None:
    if sql is None:
        d.add("realtime", "warn", "the Supabase API does not show publications (supabase_realtime)", NO_SQL)
    elif sql.one("select 1 from pg_publication where pubname = 'supabase_realtime'") is None:
        d.add("realtime", "warn", "no supabase_realtime publication: not a Supabase database, so there is no live "
              "stream to feed (the rows are stored and read as usual)",
              "nothing to do outside Supabase; on Supabase the publication exists and " + FIX_REALTIME)
    elif sql.one("select 1 from pg_publication_tables where pubname = 'supabase_realtime' and schemaname = 'public' "
                 "and tablename = %s", TABLE) is None:
        d.add("realtime", "warn", "training_predictions is not in the supabase_realtime publication (as the "
              "platform deployed it): the UI's live stream gets no new rows; the page shows them when reloaded",
              FIX_REALTIME)
    else:
        d.add("realtime", "pass", "training_predictions is in the supabase_realtime publication")


def _rows(d: Diagnosis, cfg, job_id: str, stored: list[dict[str, Any]], foreign: int) -> None:
    spooled = Counter(r["step"] for r in spool_rows(cfg.predictions_path, job_id, quiet=True))
    in_db = Counter(r["step"] for r in stored)
    missing = {s: n - in_db.get(s, 0) for s, n in spooled.items() if n > in_db.get(s, 0)}
    if foreign:
        d.add("rows of the job", "fail", f"{foreign} rows of job {job_id} carry another user_id than USER_ID: "
              "their owner cannot read them", "set USER_ID to the job's owner (the platform passes it)")
    if missing:
        steps = sorted(missing)
        shown = ", ".join(map(str, steps[:10])) + (" …" if len(steps) > 10 else "")
        d.add("rows of the job", "fail", f"{len(steps)} rounds ({sum(missing.values())} rows) are only in the spool "
              f"{cfg.predictions_path}: steps {shown}; the database has {len(in_db)} rounds",
              "python entrypoint.py replay   (sends the spool; rows already stored are left as they are)")
    elif not in_db:
        d.add("rows of the job", "warn", f"no rows for job {job_id} in the database, nor in the spool",
              "check JOB_ID, or wait for the first prediction round (see PREDICTIONS_CONFIG.sample_frequency)")
    elif not foreign:
        d.add("rows of the job", "pass", f"{len(in_db)} rounds, {len(stored)} rows for job {job_id} "
              f"(steps {min(in_db)}–{max(in_db)}); the spool holds none the database lacks")


def _newest(d: Diagnosis, stored: list[dict[str, Any]]) -> None:
    times = [r["created_at"] for r in stored if r.get("created_at")]
    if not times:
        d.add("newest round", "warn", "no row of the job to date", "see the check above")
        return
    newest = max(times, key=lambda t: t if isinstance(t, datetime) else datetime.fromisoformat(str(t)))
    when = newest if isinstance(newest, datetime) else datetime.fromisoformat(str(newest))
    step = max(r["step"] for r in stored if r.get("created_at") == newest)
    age = datetime.now(timezone.utc) - when
    d.add("newest round", "pass", f"step {step} at {when.isoformat(timespec='seconds')} "
          f"({int(age.total_seconds() // 60)} minutes ago)")


def run_checks(job_id: str | None = None, *, http_client=None) -> Diagnosis:
    """Every check, in order; returns the findings. `http_client` replaces the HTTP client (tests)."""
    d = Diagnosis()
    try:
        cfg = load_config()
    except ConfigError as e:
        d.add("configuration", "fail", str(e), "fix the variable named above; `python entrypoint.py check` lists them all")
        return d
    d.add("configuration", "pass", "the environment loads")
    job = job_id or cfg.job_id
    _storage(d, cfg)
    if cfg.storage == "local":
        _spool_only(d, cfg, job)
        return d
    if cfg.secrets.supabase_db_url is not None:
        _with_sql(d, cfg, job)
    else:
        _with_rest(d, cfg, job, http_client)
    return d


def _spool_only(d: Diagnosis, cfg, job: str) -> None:
    """Local mode: what the spool holds (the rows a database mode would have stored)."""
    steps = Counter(r["step"] for r in spool_rows(cfg.predictions_path, job, quiet=True))
    if steps:
        d.add("local spool", "pass", f"{len(steps)} rounds, {sum(steps.values())} rows of job {job} in "
              f"{cfg.predictions_path} (steps {min(steps)}–{max(steps)}); `python entrypoint.py report` shows them")
    else:
        d.add("local spool", "warn", f"no rows of job {job} in {cfg.predictions_path}",
              "check OUTPUT_DIR and JOB_ID, and that PREDICTIONS_CONFIG.enabled is true")


def _skip(d: Diagnosis, why: str, *checks: str) -> None:
    for check in checks:
        d.add(check, "skip", why)


AFTER_TABLE = ("row level security", "unique key", "realtime", "rows of the job", "newest round")


def _with_sql(d: Diagnosis, cfg, job: str) -> None:
    import psycopg

    url = cfg.secrets.supabase_db_url.get_secret_value()
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            sql = SqlCatalog(conn)
            _key_role(d, cfg, sql)  # a wrong key is reported; the checks below still say what else is wrong
            if not _table(d, sql.columns()):
                return _skip(d, "the table is missing or incomplete", *AFTER_TABLE)
            _policies(d, sql, job, cfg.user_id)
            _unique(d, sql)
            _realtime(d, sql)
            stored, foreign = sql.rows(job, cfg.user_id)
            _rows(d, cfg, job, stored, foreign)
            _newest(d, stored)
    except psycopg.Error as e:
        d.add("database", "fail", hide(f"cannot query Postgres: {type(e).__name__}: {e}".strip(), url),
              "check SUPABASE_DB_URL: host, port, database, user and password")


def _with_rest(d: Diagnosis, cfg, job: str, http_client) -> None:
    import httpx

    key = cfg.secrets.supabase_service_key.get_secret_value()
    if not _key_role(d, cfg, None):
        # PostgREST shows another role only what that role may read: a table hidden from the anon
        # key would look missing. The key is the finding; what follows is moot until it is fixed.
        return _skip(d, "not checked with a key that is not service_role", "table", *AFTER_TABLE)
    http = http_client or httpx.Client(timeout=httpx.Timeout(20), follow_redirects=True)
    try:
        try:
            columns = _rest_columns(cfg.supabase_url, key, http)
        except httpx.HTTPError as e:
            d.add("table", "fail", hide(f"the API did not answer: {type(e).__name__}: {e}", key),
                  "check SUPABASE_URL, and that SUPABASE_SERVICE_KEY is the service_role key")
            return _skip(d, "the API did not answer", *AFTER_TABLE)
        if not _table(d, columns):
            return _skip(d, "the table is missing or incomplete", *AFTER_TABLE)
        _policies(d, None, job, cfg.user_id)
        _unique(d, None)
        _realtime(d, None)
        try:
            stored = supabase_rows(cfg.supabase_url, key, job, cfg.user_id, http_client=http,
                                   columns="step,sample_index,created_at")
        except SourceError as e:
            d.add("rows of the job", "fail", str(e), "check the key and the table above")
            return _skip(d, "the rows could not be read", "newest round")
        _rows(d, cfg, job, stored, 0)
        _newest(d, stored)
    finally:
        if http_client is None:
            http.close()


def diagnose_command(job_id: str | None = None, *, http_client=None) -> int:
    """`entrypoint.py diagnose`: print each finding; 0 when nothing failed (warnings allowed), else 1."""
    d = run_checks(job_id, http_client=http_client)
    counts = Counter(f.status for f in d.findings)
    log.info(f"diagnose: {counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed, "
             f"{counts['skip']} skipped")
    return EXIT_OK if d.ok else EXIT_CHECK_FAILED
