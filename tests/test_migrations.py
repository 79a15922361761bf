"""Migrations on a real Postgres: bare, twice, and from two processes at once."""

from __future__ import annotations

import logging
import multiprocessing
import time
from pathlib import Path

import psycopg
import pytest

from predictions.store.migrations import LOCK_KEY, SQL_DIR, MigrationError, apply_migrations, pending_migrations
from predictions.store.rows import ADDED_COLUMNS, PLATFORM_COLUMNS, ROW_COLUMNS

pytestmark = pytest.mark.postgres

SCHEMA_QUERY = """
select 'column', table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
  from information_schema.columns where table_schema = 'public'
union all select 'index', indexdef from pg_indexes where schemaname = 'public'
union all select 'policy', policyname || ' ' || cmd || ' ' || roles::text || ' ' || coalesce(qual, '')
  from pg_policies where schemaname = 'public'
union all select 'grant', grantee || ' ' || privilege_type
  from information_schema.role_table_grants where table_name = 'training_predictions'
union all select 'constraint', conname || ' ' || pg_get_constraintdef(oid)
  from pg_constraint where conrelid = 'public.training_predictions'::regclass
union all select 'default', column_name || ' ' || coalesce(column_default, '') || ' ' || is_identity
  from information_schema.columns where table_name = 'training_predictions'
union all select 'acl', relname || ' ' || coalesce(relacl::text, '')
  from pg_class where relnamespace = 'public'::regnamespace and relkind in ('r', 'S')
union all select 'function', p.oid::regprocedure::text || ' ' || pg_get_functiondef(p.oid)
  from pg_proc p where pronamespace = 'auth'::regnamespace
union all select 'role', rolname || ' ' || rolcanlogin || ' ' || rolbypassrls
  from pg_roles where rolname in ('anon', 'authenticated', 'service_role')
union all select 'rls', relrowsecurity::text from pg_class where oid = 'public.training_predictions'::regclass
union all select 'migration', version || ' ' || name from supabase_migrations.schema_migrations
order by 1, 2
"""


def schema(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(SCHEMA_QUERY).fetchall()


def test_bare_postgres_gets_the_table_with_rls_and_the_supabase_roles(pg_db):
    result = apply_migrations(pg_db)
    assert result.applied == sorted(p.name for p in SQL_DIR.glob("*.sql"))
    rows = schema(pg_db)
    with psycopg.connect(pg_db) as conn:
        columns = [r[0] for r in conn.execute(
            "select column_name from information_schema.columns"
            " where table_schema = 'public' and table_name = 'training_predictions' order by ordinal_position")]
    platform = list(PLATFORM_COLUMNS)  # the platform's order: created_at after its first ten columns
    assert columns == ["id", *platform[:8], "created_at", *platform[8:], *ADDED_COLUMNS]
    assert ("rls", "true") in rows
    assert any("training_predictions_job_step_sample_key UNIQUE (job_id, step, sample_index)" in r[1] for r in rows)
    assert {" ".join(r[1].split(" ")[:6]) for r in rows if r[0] == "policy"} == {
        "Users can view their own predictions", "Users can create their own predictions",
        "Users can delete their own predictions"}
    with psycopg.connect(pg_db) as conn:
        roles = dict(conn.execute("select rolname, rolbypassrls from pg_roles"
                                  " where rolname in ('anon', 'authenticated', 'service_role')").fetchall())
        assert roles == {"anon": False, "authenticated": False, "service_role": True}


def test_applying_twice_changes_nothing(pg_db, caplog):
    assert pending_migrations(pg_db) == sorted(p.name for p in SQL_DIR.glob("*.sql"))
    apply_migrations(pg_db)
    assert pending_migrations(pg_db) == []
    before = schema(pg_db)
    caplog.clear()
    again = apply_migrations(pg_db)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("predictions")]
    assert again.applied == [] and again.already == sorted(p.name for p in SQL_DIR.glob("*.sql"))
    assert schema(pg_db) == before
    assert "nothing pending" in lines[-1]  # nothing run: no wall-clock bound (a loaded machine is slow)


def test_every_file_run_twice_directly_is_idempotent(pg_db):
    with psycopg.connect(pg_db, autocommit=True) as conn:
        for path in sorted(SQL_DIR.glob("*.sql")):
            conn.execute(path.read_text())
    apply_migrations(pg_db)  # recorded now, over objects that already exist
    before = schema(pg_db)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        for path in sorted(SQL_DIR.glob("*.sql")):
            conn.execute(path.read_text())
    assert schema(pg_db) == before


class _Lines(logging.Handler):
    """The migrations' lines in a process of its own (caplog is this process's)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _apply(url: str, queue) -> None:
    logger, handler = logging.getLogger("predictions"), _Lines()
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    queue.put((apply_migrations(url).applied, handler.lines))


def test_two_processes_at_once_apply_each_file_once(pg_db):
    # Hold the migrations' lock while both start, so that both are certainly waiting on it at once.
    files = sorted(p.name for p in SQL_DIR.glob("*.sql"))
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_apply, args=(pg_db, queue)) for _ in range(2)]
    with psycopg.connect(pg_db, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        for p in procs:
            p.start()
        waiting = "select count(*) from pg_locks where locktype = 'advisory' and not granted"
        deadline = time.monotonic() + 60
        while holder.execute(waiting).fetchone()[0] < 2:
            assert time.monotonic() < deadline, "the two processes never waited on the lock"
            time.sleep(0.05)
        holder.execute("select pg_advisory_unlock(%s)", (LOCK_KEY,))
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    assert sorted(applied for applied, _ in results) == [[], files]
    assert all(any(line.startswith("migrations: another process is applying them; waiting for it") for line in lines)
               for _, lines in results)
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0] == len(files)


def test_a_broken_file_names_itself_and_keeps_what_was_applied(pg_db, tmp_path):
    for path in SQL_DIR.glob("*.sql"):
        (tmp_path / path.name).write_text(path.read_text())
    broken = "-- a comment\ncreate table fine (x int);\ncreate table oops (;"
    (tmp_path / "20991231000000_broken.sql").write_text(broken)
    with pytest.raises(MigrationError) as info:
        apply_migrations(pg_db, tmp_path)
    assert "20991231000000_broken.sql line 3: syntax error" in str(info.value)
    assert "pg-test-password" not in str(info.value)
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0] == len(
            list(SQL_DIR.glob("*.sql")))
        assert conn.execute("select to_regclass('public.fine')").fetchone()[0] is None  # the file rolled back whole
    assert pending_migrations(pg_db, tmp_path) == ["20991231000000_broken.sql"]


def test_unreachable_database_is_a_migration_error_without_the_password():
    with pytest.raises(MigrationError) as info:
        apply_migrations("postgresql://u:hunter2@127.0.0.1:1/db", Path("/nonexistent"))
    assert "cannot connect" in str(info.value) and "hunter2" not in str(info.value)


SUPABASE_LIKE = """
create schema if not exists auth;
create table auth.users (id uuid primary key);
create table public.training_jobs (id uuid primary key, user_id uuid references auth.users (id) on delete cascade);
create table public.local_training_jobs (id text primary key, user_id uuid references auth.users (id) on delete cascade);
-- a table an earlier version of this image made (uuid job_id, boolean exact_match, fractional
-- epoch, bigint id), with no unique key yet
create table public.training_predictions (
  id bigint generated always as identity primary key, job_id uuid not null, user_id uuid not null,
  epoch double precision, step integer not null, sample_index integer not null, prompt text,
  ground_truth text, prediction text, created_at timestamptz not null default now(), prompt_id text,
  source_index integer, sample_source text, sample_source_id text, prompt_tokens integer,
  completion_tokens integer, total_tokens integer, latency_ms double precision, max_new_tokens integer,
  do_sample boolean, exact_match boolean, char_error_rate double precision, length_ratio double precision,
  word_overlap double precision, validation_pass boolean, validation_errors jsonb, validation_kind text);
"""


def test_on_a_supabase_like_database_the_table_gains_its_columns_and_foreign_keys(pg_db):
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute(SUPABASE_LIKE)
    apply_migrations(pg_db)
    before = schema(pg_db)
    assert apply_migrations(pg_db).applied == []
    assert schema(pg_db) == before
    user, job = "11111111-1111-4111-8111-111111111111", "job_abc123"
    insert = ("insert into public.training_predictions (job_id, user_id, epoch, step, sample_index, prompt, prediction)"
              " values (%s, %s, 0, 1, 0, 'q', 'p')")
    with psycopg.connect(pg_db, autocommit=True) as conn:
        columns = {r[0] for r in conn.execute("select column_name from information_schema.columns"
                                              " where table_name = 'training_predictions'")}
        assert columns == {"id", "created_at", *ROW_COLUMNS}
        fkeys = {r[0] for r in conn.execute("select conname from pg_constraint where contype = 'f'"
                                            " and conrelid = 'public.training_predictions'::regclass")}
        # the platform's jobs table (local_training_jobs, text ids), not a uuid training_jobs
        assert fkeys == {"training_predictions_user_id_fkey", "fk_training_predictions_job"}
        conn.execute("insert into auth.users values (%s)", (user,))
        conn.execute("insert into public.local_training_jobs values (%s, %s)", (job, user))
        conn.execute(insert, (job, user))
        with pytest.raises(psycopg.errors.ForeignKeyViolation):  # no predictions for a job that is not there
            conn.execute(insert, ("job_missing", user))
        conn.execute("delete from auth.users")  # cascades: the user's jobs, and its predictions
        assert conn.execute("select count(*) from public.training_predictions").fetchone()[0] == 0


def test_the_migrate_command_applies_sql_and_nothing_else(pg_db, tmp_path):
    import subprocess
    import sys

    from tests.e2e import ROOT, job_env

    env = job_env(tmp_path / "out", SUPABASE_DB_URL=pg_db)
    proc = subprocess.run([sys.executable, "entrypoint.py", "migrate"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "migrations: applied 20261130000000_platform_contract.sql" in proc.stdout
    assert "pg-test-password" not in proc.stdout + proc.stderr and not (tmp_path / "out").exists()
    assert pending_migrations(pg_db) == []
    unset = subprocess.run([sys.executable, "entrypoint.py", "migrate"], cwd=ROOT, env=job_env(tmp_path / "out"),
                           capture_output=True, text=True, timeout=300)
    assert unset.returncode == 78 and "set SUPABASE_DB_URL" in unset.stdout


def test_migrate_recreates_a_dropped_table_though_its_files_are_recorded_and_says_what_it_cannot(migrated_db, caplog):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("drop table public.training_predictions cascade")
    caplog.set_level(logging.INFO, logger="predictions.store.migrations")
    result = apply_migrations(migrated_db)
    assert result.applied == [] and result.repaired == [p.name for p in sorted(SQL_DIR.glob("*.sql"))]
    log = "\n".join(caplog.messages)
    assert "the table public.training_predictions is missing (dropped?)" in log
    assert "Rows of a dropped table are not brought back" in log and "entrypoint.py replay" in log
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0] == len(result.repaired)
        assert conn.execute("select exists (select 1 from pg_constraint where conname ="
                            " 'training_predictions_job_step_sample_key')").fetchone()[0]
    caplog.clear()
    assert apply_migrations(migrated_db).repaired == []  # whole again: nothing to do
    assert "nothing pending" in caplog.messages[-1]


def test_a_dropped_column_and_key_are_added_again(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("alter table public.training_predictions drop column metrics,"
                     " drop constraint training_predictions_job_step_sample_key")
    assert apply_migrations(migrated_db).repaired
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("select count(*) from pg_attribute where attname = 'metrics'"
                            " and attrelid = 'public.training_predictions'::regclass").fetchone()[0] == 1


def test_waiting_for_the_lock_has_a_bound_and_names_the_way_out(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))  # a session that never lets go
        with pytest.raises(MigrationError) as e:
            apply_migrations(migrated_db, lock_wait_s=0.5)
    assert "held the migrations' lock" in str(e.value) and "pg_terminate_backend" in str(e.value)


def test_a_role_that_may_not_create_the_log_is_one_error_naming_the_fix(migrated_db):
    role = f"ro_{migrated_db.rsplit('/', 1)[1]}"
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(f"create role {role} login password 'CANARYro-pw'")
    with pytest.raises(MigrationError) as e:
        apply_migrations(migrated_db.replace("postgres:pg-test-password", f"{role}:CANARYro-pw"))
    assert "(42501)" in str(e.value) and "database's owner" in str(e.value) and "CANARY" not in str(e.value)
