"""Migrations on a real Postgres: bare, twice, and from two processes at once."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import psycopg
import pytest

from predictions.migrations import SQL_DIR, MigrationError, apply_migrations

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
union all select 'rls', relrowsecurity::text from pg_class where oid = 'public.training_predictions'::regclass
union all select 'migration', version || ' ' || name from supabase_migrations.schema_migrations
order by 1, 2
"""


def schema(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(SCHEMA_QUERY).fetchall()


def test_bare_postgres_gets_the_table_with_rls_and_the_supabase_roles(pg_db):
    result = apply_migrations(pg_db, log=lambda _m: None)
    assert result.applied == sorted(p.name for p in SQL_DIR.glob("*.sql"))
    rows = schema(pg_db)
    columns = {r[1].split()[0].split(".")[1] for r in rows if r[0] == "column"}
    from predictions.rows import ROW_COLUMNS

    assert columns == {"id", "created_at", *ROW_COLUMNS}
    assert ("rls", "true") in rows
    assert any("training_predictions_job_step_sample_key UNIQUE (job_id, step, sample_index)" in r[1] for r in rows)
    assert sum(r[0] == "policy" for r in rows) == 2
    with psycopg.connect(pg_db) as conn:
        roles = dict(conn.execute("select rolname, rolbypassrls from pg_roles where rolname in ('anon','authenticated','service_role')").fetchall())
        assert roles == {"anon": False, "authenticated": False, "service_role": True}


def test_applying_twice_changes_nothing(pg_db):
    apply_migrations(pg_db, log=lambda _m: None)
    before = schema(pg_db)
    lines: list[str] = []
    again = apply_migrations(pg_db, log=lines.append)
    assert again.applied == [] and again.already == sorted(p.name for p in SQL_DIR.glob("*.sql"))
    assert schema(pg_db) == before
    assert again.seconds < 1.0 and "nothing pending" in lines[-1]


def test_every_file_run_twice_directly_is_idempotent(pg_db):
    with psycopg.connect(pg_db, autocommit=True) as conn:
        for path in sorted(SQL_DIR.glob("*.sql")):
            conn.execute(path.read_text())
    apply_migrations(pg_db, log=lambda _m: None)  # recorded now, over objects that already exist
    before = schema(pg_db)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        for path in sorted(SQL_DIR.glob("*.sql")):
            conn.execute(path.read_text())
    assert schema(pg_db) == before


def _apply(url: str, queue) -> None:
    queue.put(apply_migrations(url, log=lambda _m: None).applied)


def test_two_processes_at_once_apply_each_file_once(pg_db):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_apply, args=(pg_db, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    applied = [queue.get(timeout=5) for _ in procs]
    assert sorted(len(a) for a in applied) == [0, len(list(SQL_DIR.glob("*.sql")))]
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0] == len(applied[0] or applied[1])


def test_a_broken_file_names_itself_and_keeps_what_was_applied(pg_db, tmp_path):
    for path in SQL_DIR.glob("*.sql"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "20991231000000_broken.sql").write_text("create table oops (;")
    with pytest.raises(MigrationError) as info:
        apply_migrations(pg_db, tmp_path, log=lambda _m: None)
    assert "20991231000000_broken.sql" in str(info.value) and "syntax error" in str(info.value)
    assert "pg-test-password" not in str(info.value)
    with psycopg.connect(pg_db) as conn:
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0] == 2


def test_unreachable_database_is_a_migration_error_without_the_password():
    with pytest.raises(MigrationError) as info:
        apply_migrations("postgresql://u:hunter2@127.0.0.1:1/db", Path("/nonexistent"), log=lambda _m: None)
    assert "cannot connect" in str(info.value) and "hunter2" not in str(info.value)
