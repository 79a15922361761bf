"""sql/ on the platform's own table (and on a table an earlier version of this image made), and
the platform's read side on the result: real Postgres, the platform's schema as a fixture."""

from __future__ import annotations

import psycopg
import pytest

from predictions.scorer import score
from predictions.store.migrations import SQL_DIR, apply_migrations
from predictions.store.rows import ADDED_COLUMNS, PLATFORM_COLUMNS, Generation, Sample, make_row
from predictions.store.writers.postgres import PostgresWriter
from tests.platform_db import DUPLICATE, JOB, OTHER, OWNER, PLATFORM_ROWS, SQL, as_user, make_platform_db
from tests.platform_reads import read_side

pytestmark = pytest.mark.postgres

CATALOG = """
select 'column', column_name || ' ' || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
  from information_schema.columns where table_schema = 'public' and table_name = 'training_predictions'
union all select 'index', indexdef from pg_indexes where tablename = 'training_predictions'
union all select 'policy', policyname || ' ' || cmd || ' ' || roles::text || ' ' || coalesce(qual, '') || coalesce(with_check, '')
  from pg_policies where tablename = 'training_predictions'
union all select 'constraint', conname || ' ' || pg_get_constraintdef(oid)
  from pg_constraint where conrelid = 'public.training_predictions'::regclass
"""


def catalog(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return set(conn.execute(CATALOG).fetchall())


def keys(url: str, job: str = JOB) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute("select step, sample_index from public.training_predictions where job_id = %s"
                            " order by 1, 2", (job,)).fetchall()


def image_rows(job: str, user: str, steps=(30, 40), samples=3) -> list[dict]:
    """Rows as this image makes them: fractional epochs, registered scores, one failed sample."""
    rows = []
    for step in steps:
        for i in range(samples):
            failed = step == steps[-1] and i == samples - 1
            text = "" if failed else ("paris" if i % 2 == 0 else "Rome ")
            gen = Generation(text, 9, 2, 41.7, None if failed else "eos", 8, False, None, None,
                             error="RuntimeError: boom" if failed else None)
            rows.append(make_row(job_id=job, user_id=user, epoch=step / 20 + 0.5, step=step,
                                 sample=Sample(i, f"question {i}", "Paris", "ab12", i, "dataset", "train.jsonl"),
                                 generation=gen, scores=score(text, "Paris")))
    return rows


def test_the_platform_table_upgraded_twice_keeps_every_row_and_everything_the_platform_made(pg_db, caplog):
    make_platform_db(pg_db)
    before = catalog(pg_db)
    apply_migrations(pg_db)
    lines = caplog.messages
    assert any("1 duplicate row(s)" in line and "training_predictions_duplicates" in line for line in lines), lines
    with psycopg.connect(pg_db, autocommit=True) as conn:  # again, every file, directly: idempotent
        after_once = catalog(pg_db)
        for path in sorted(SQL_DIR.glob("*.sql")):
            conn.execute(path.read_text())
    assert apply_migrations(pg_db).applied == []
    after = catalog(pg_db)
    assert after == after_once
    assert before <= after, sorted(before - after)  # nothing the platform made changed or went away
    assert {("constraint", "training_predictions_job_step_sample_key UNIQUE (job_id, step, sample_index)")} <= after

    with psycopg.connect(pg_db) as conn:
        assert keys(pg_db) == [(s, i) for _, s, i, _ in PLATFORM_ROWS]  # each key once
        moved = conn.execute("select job_id, step, sample_index, original ->> 'exact_match'"
                             " from public.training_predictions_duplicates").fetchall()
        assert moved == [(JOB, DUPLICATE[1], DUPLICATE[2], "0")]  # the later copy, whole
        total = conn.execute("select count(*) from public.training_predictions").fetchone()[0]
        assert total + len(moved) == len(PLATFORM_ROWS) + 2  # nothing lost: 7 + the other user's row
        types = dict(conn.execute("select column_name, data_type from information_schema.columns"
                                  " where table_name = 'training_predictions'").fetchall())
        assert {c: types[c] for c in PLATFORM_COLUMNS} == PLATFORM_COLUMNS
        assert {c: types[c] for c in ADDED_COLUMNS} == ADDED_COLUMNS
        assert read_side(conn, JOB)["realtime"] is True


def _fresh(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create publication supabase_realtime")  # as Supabase has it
    apply_migrations(url)


def _platform(url: str) -> None:
    make_platform_db(url)
    for _ in range(2):  # applied twice: the second changes nothing
        apply_migrations(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute((SQL_DIR / "20261130000000_platform_contract.sql").read_text())


@pytest.mark.parametrize("make", [_fresh, _platform], ids=["fresh database", "platform table upgraded"])
def test_the_platform_read_side_on_rows_this_image_wrote(pg_db, make):
    make(pg_db)
    writer = PostgresWriter(pg_db)
    try:
        writer.preflight()
        rows = image_rows(JOB, OWNER)
        writer.write(rows)
        writer.write(rows[:4])  # a retried round stores nothing twice
    finally:
        writer.close()
    with psycopg.connect(pg_db) as conn:
        reads = read_side(conn, JOB)
        theirs = 6 if make is _platform else 0
        assert reads["count"] == theirs + 6 and len(reads["page"]) == theirs + 6
        assert reads["realtime"] is True
        mine = [e for e in reads["epochs"] if e[0] == 2]  # step 30 → epoch 2.0, step 40 → 2.5: both 2
        assert mine == [(2, 6, 40)]
        (trend,) = [t for t in reads["trends"] if t[0] == 2]
        assert trend[3] == pytest.approx(3 / 5)  # avg(exact_match): 'paris' ×3 right, 'Rome ' ×2 wrong, the failed one null
        assert trend[8] <= 1.0  # max CER clamped
        page2 = read_side(conn, JOB, epoch=2)["page"]
        assert {r["step"] for r in page2} == {30, 40}  # epoch = parseInt('2'): the fractional rounds are there
        assert [r[0] for r in read_side(conn, JOB, sample=0)["compare"]][-2:] == [2, 2]
        failed = conn.execute("select prediction, exact_match, generation_error, epoch_progress from"
                              " public.training_predictions where job_id = %s and step = 40 and sample_index = 2",
                              (JOB,)).fetchone()
        assert failed == ("", None, "RuntimeError: boom", 2.5)
        conn.commit()
        for user, seen in ((OWNER, theirs + 6), (OTHER, 0), (None, 0)):
            try:
                with conn.transaction():
                    as_user(conn, user)
                    visible = conn.execute("select count(*) from public.training_predictions where job_id = %s",
                                           (JOB,)).fetchone()[0]
            except psycopg.errors.InsufficientPrivilege:  # anon on a bare Postgres: no grant at all
                visible = 0
            assert visible == seen, user


def _old_image(url: str) -> None:
    """A database an earlier version of this image migrated, with rows it wrote."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((SQL_DIR / "20261122000000_supabase_compat.sql").read_text())
        conn.execute((SQL / "old_image_schema.sql").read_text())
        conn.execute("create schema if not exists supabase_migrations; create table supabase_migrations.schema_migrations"
                     " (version text primary key, statements text[], name text)")
        conn.execute("insert into supabase_migrations.schema_migrations values"
                     " ('20261122000000', null, 'supabase_compat'), ('20261122000100', null, 'training_predictions')")
        conn.execute("insert into public.training_predictions (job_id, user_id, epoch, step, sample_index, prompt,"
                     " ground_truth, prediction, exact_match, latency_ms) values"
                     " (%s, %s, 0.5, 5, 0, 'q', 'a', 'a', true, 41.7), (%s, %s, 1.0, 10, 0, 'q', 'a', null, false, 3.2)",
                     (OWNER, OWNER, OWNER, OWNER))


@pytest.mark.parametrize("make", [_old_image, lambda url: apply_migrations(url)],
                         ids=["table an earlier image made", "fresh database"])
def test_rows_in_the_platform_writers_shape_are_accepted_by_a_table_this_image_made(pg_db, make):
    make(pg_db)
    apply_migrations(pg_db)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("insert into public.training_predictions (job_id, user_id, epoch, step, sample_index, prompt,"
                     " prediction, exact_match, latency_ms) values (%s, %s, 1, 20, 0, 'q', 'a', 1.0, 42)", (JOB, OWNER))
        reads = read_side(conn, JOB)
        assert reads["count"] == 1 and reads["trends"][0][3] == 1.0 and reads["epochs_distinct"] == [1]
        if make is _old_image:  # the earlier rows, in the platform's types and meanings
            old = conn.execute("select epoch, epoch_progress, exact_match, latency_ms, prediction, pg_typeof(id)::text"
                               " from public.training_predictions where job_id = %s order by step", (OWNER,)).fetchall()
            assert old == [(0, 0.5, 1.0, 42, "a", "uuid"), (1, 1.0, 0.0, 3, "", "uuid")]


def test_the_postgres_writer_on_the_platform_table_before_any_migration(pg_db):
    make_platform_db(pg_db)  # no sql/: no added columns, no unique key, duplicates as they were
    writer = PostgresWriter(pg_db)
    try:
        writer.preflight()
        report = "\n".join(writer.report())
        assert "lacks 7 column(s)" in report and "epoch_progress" in report and "no unique key" in report
        assert "python entrypoint.py migrate" in report
        rows = image_rows(JOB, OWNER)
        writer.write(rows[:4])
        writer.write(rows)  # the first four again: inserted once
    finally:
        writer.close()
    assert keys(pg_db)[-6:] == [(s, i) for s in (30, 40) for i in range(3)]
    assert len(keys(pg_db)) == len(PLATFORM_ROWS) + 1 + 6  # the platform's duplicate stays where it was
