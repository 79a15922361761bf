"""The direct Postgres writer against a real server."""

from __future__ import annotations

import json

import psycopg
import pytest

from predictions.rows import Generation, Sample, Scores, make_row
from predictions.writers.base import PermanentWriteError, TransientWriteError
from predictions.writers.postgres import PostgresWriter

pytestmark = pytest.mark.postgres

OWNER = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
JOB = "33333333-3333-4333-8333-333333333333"


def rows(step: int, n: int = 3) -> list[dict]:
    out = []
    for i in range(n):
        sample = Sample(i, f"reverse: a{i} b", "b a", f"pid{i}", i * 10, "eval", "eval.jsonl")
        gen = Generation("b a", 4, 3, 12.5, "eos", 8, False, None, None)
        scores = Scores(True, 0.0, 1.0, 1.0, False, ["not valid JSON"], "json_parse")
        out.append(make_row(job_id=JOB, user_id=OWNER, epoch=1.0, step=step, sample=sample, generation=gen, scores=scores))
    return out


def visible_to(url: str, user: str) -> int:
    with psycopg.connect(url) as conn:
        conn.execute("set local role authenticated")
        conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": user}),))
        return conn.execute("select count(*) from public.training_predictions").fetchone()[0]


def test_rows_are_written_once_and_only_their_owner_sees_them(migrated_db):
    writer = PostgresWriter(migrated_db)
    writer.preflight()
    writer.write(rows(5))
    writer.write(rows(5))  # a retry or a replay: no duplicate
    writer.write(rows(10))
    writer.close()
    with psycopg.connect(migrated_db) as conn:
        stored = conn.execute("select step, sample_index, validation_errors, stop_reason from public.training_predictions"
                              " order by step, sample_index").fetchall()
    assert [(s, i) for s, i, _, _ in stored] == [(5, 0), (5, 1), (5, 2), (10, 0), (10, 1), (10, 2)]
    assert stored[0][2] == ["not valid JSON"] and stored[0][3] == "eos"
    assert visible_to(migrated_db, OWNER) == 6 and visible_to(migrated_db, OTHER) == 0


def test_preflight_on_a_bare_database_says_apply_the_migrations(pg_db):
    with pytest.raises(PermanentWriteError, match="apply the migrations"):
        PostgresWriter(pg_db).preflight()
    with pytest.raises(PermanentWriteError, match="apply the migrations"):
        PostgresWriter(pg_db).write(rows(1))


def test_preflight_refuses_a_role_that_cannot_insert(migrated_db):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute("drop role if exists reader; create role reader login password 'r'")
        conn.execute("grant usage on schema public to reader; grant select on public.training_predictions to reader")
    reader_url = migrated_db.replace("postgres:pg-test-password", "reader:r")
    with pytest.raises(PermanentWriteError, match="may not insert"):
        PostgresWriter(reader_url).preflight()
    with pytest.raises(PermanentWriteError, match="may not insert") as info:
        PostgresWriter(reader_url).write(rows(1))
    assert "reader:r@" not in str(info.value)


def test_unreachable_is_transient_and_the_writer_recovers(migrated_db, postgres_server):
    writer = PostgresWriter(migrated_db, connect_timeout_s=2)
    writer.write(rows(1))
    postgres_server.stop()
    try:
        with pytest.raises(TransientWriteError) as info:
            writer.write(rows(2))
        assert "pg-test-password" not in str(info.value)
    finally:
        postgres_server.start()
    writer.write(rows(2))  # reconnects by itself
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("select count(*) from public.training_predictions").fetchone()[0] == 6
    assert "<hidden>" in repr(writer)
