"""Exactly-once on the platform's table as deployed (no unique key on (job_id, step, sample_index)):
a retry whose first try commits late, concurrent writers, and rows an earlier version stored under
random ids — through a PostgREST stand-in that executes on a real PostgreSQL
(tests/postgrest_pg.py), so Postgres, not the test, decides what is stored."""

from __future__ import annotations

import threading

import psycopg
import pytest
from tenacity import wait_none

from predictions.store.migrations import apply_migrations
from predictions.store.rows import row_id
from predictions.store.writers.postgres import PostgresWriter
from predictions.store.writers.supabase import SupabaseWriter
from tests.platform_db import JOB, OWNER, make_platform_db
from tests.postgrest_double import serve
from tests.postgrest_pg import PostgrestOnPostgres
from tests.test_platform_table import image_rows

pytestmark = pytest.mark.postgres

KEY = "sb_secret_CANARY-exactly-once-key"


def copies(url: str) -> dict[tuple[int, int], int]:
    """(step, sample_index) → how many rows of JOB hold it."""
    with psycopg.connect(url) as conn:
        return dict(((s, i), n) for s, i, n in conn.execute(
            "select step, sample_index, count(*) from public.training_predictions where job_id = %s group by 1, 2",
            (JOB,)).fetchall())


def test_row_ids_are_derived_from_the_key_alone():
    assert row_id(JOB, 30, 1) == row_id(JOB, 30.0, 1) != row_id(JOB, 30, 2)
    assert row_id(JOB, 3, 11) != row_id(JOB, 31, 1)  # no ambiguity between the fields


def test_a_retry_whose_first_try_commits_late_stores_each_row_once(pg_db):
    """The first insert's answer never comes (the client times out) and it commits only after the
    retry has read the round (nothing yet) and sent it again: on the primary key the retry's rows
    are a conflict. Reading, then inserting, stored every row of the round twice."""
    make_platform_db(pg_db)
    posts: list[str] = []
    held: list[int] = []  # how many inserts had arrived when the first successful one was held
    retried = threading.Event()

    def hold_the_first_commit(request):
        if not held:
            held.append(len(posts))
            retried.wait(60)  # until the retry's insert arrived (a bound only against a hang)

    stand_in = PostgrestOnPostgres(pg_db, before_commit=hold_the_first_commit)

    def handler(request):
        if request.method == "POST":
            posts.append(request.url.query.decode())
            if held and len(posts) > held[0]:
                retried.set()
        return stand_in(request)

    server = serve(handler, one_at_a_time=False)
    writer = SupabaseWriter(server.url, KEY, timeout_s=2, wait=wait_none())
    try:
        writer.write(image_rows(JOB, OWNER, steps=(30,), samples=4))
    finally:
        writer.close()
        server.close()
    assert retried.is_set(), stand_in.log  # the retry did happen while the first insert was uncommitted
    assert {k: n for k, n in copies(pg_db).items() if k[0] == 30} == {(30, i): 1 for i in range(4)}


def test_concurrent_writers_through_the_api_and_straight_to_postgres_store_each_row_once(pg_db):
    """Four API writers and two Postgres writers send the same three rounds at once, also onto the
    rows the platform's pods stored (steps 10, 20, random ids): one copy each, the old ones kept."""
    make_platform_db(pg_db)
    before = copies(pg_db)
    server = serve(PostgrestOnPostgres(pg_db), one_at_a_time=False)
    rows = image_rows(JOB, OWNER, steps=(10, 30, 40), samples=5)
    start, errors = threading.Barrier(6), []

    def send(writer):
        try:
            start.wait(30)
            for step in (10, 30, 40):
                writer.write([r for r in rows if r["step"] == step])
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(e))
        finally:
            writer.close()

    writers = [SupabaseWriter(server.url, KEY, wait=wait_none()) for _ in range(4)]
    writers += [PostgresWriter(pg_db) for _ in range(2)]
    threads = [threading.Thread(target=send, args=(w,)) for w in writers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        server.close()
    assert errors == []
    stored = copies(pg_db)
    assert {k: n for k, n in stored.items() if k[0] in (30, 40)} == {(s, i): 1 for s in (30, 40) for i in range(5)}
    # Step 10's samples 0–2 were the platform's (sample 1 twice): kept as they were; 3 and 4 added once.
    assert {k: n for k, n in stored.items() if k[0] == 10} == {**{k: n for k, n in before.items() if k[0] == 10},
                                                               (10, 3): 1, (10, 4): 1}


def test_after_the_migration_the_api_writer_upserts_on_the_key_and_a_replay_adds_nothing(pg_db):
    make_platform_db(pg_db)
    apply_migrations(pg_db)
    server = serve(PostgrestOnPostgres(pg_db), one_at_a_time=False)
    rows = image_rows(JOB, OWNER, steps=(30,), samples=3)
    writer = SupabaseWriter(server.url, KEY, wait=wait_none())
    try:
        writer.write(rows)
        writer.write(rows)
        assert writer.table_shape().unique_key is True
    finally:
        writer.close()
        server.close()
    with psycopg.connect(pg_db) as conn:
        ids = conn.execute("select id::text from public.training_predictions where job_id = %s and step = 30"
                           " order by sample_index", (JOB,)).fetchall()
    assert ids == [(row_id(JOB, 30, i),) for i in range(3)]
