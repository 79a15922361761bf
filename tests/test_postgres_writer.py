"""The direct Postgres writer against a real server."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from predictions.store.rows import Generation, Sample, Scores, make_row
from predictions.store.writers.base import PermanentWriteError, TransientWriteError
from predictions.store.writers.postgres import PostgresWriter

pytestmark = pytest.mark.postgres

OWNER = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
JOB = "33333333-3333-4333-8333-333333333333"


def rows(step: int, n: int = 3) -> list[dict]:
    out = []
    for i in range(n):
        sample = Sample(i, f"reverse: a{i} b", "b a", f"pid{i}", i * 10, "dataset", "eval.jsonl")
        gen = Generation("b a", 4, 3, 12.5, "eos", 8, False, None, None)
        scores = Scores({"exact_match": 1.0, "char_error_rate": 0.0, "length_ratio": 1.0, "word_overlap": 1.0, "word_f1": 1.0},
                        False, [{"validator": "json_parse", "message": "Prediction is not valid JSON", "detail": "x"}], "json_parse")
        out.append(make_row(job_id=JOB, user_id=OWNER, epoch=1.0, step=step,
                            sample=sample, generation=gen, scores=scores))
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
        stored = conn.execute("select step, sample_index, validation_errors, stop_reason"
                              " from public.training_predictions order by step, sample_index").fetchall()
    assert [(s, i) for s, i, _, _ in stored] == [(5, 0), (5, 1), (5, 2), (10, 0), (10, 1), (10, 2)]
    assert stored[0][2] == [{"validator": "json_parse", "message": "Prediction is not valid JSON", "detail": "x"}]
    assert stored[0][3] == "eos"
    assert visible_to(migrated_db, OWNER) == 6 and visible_to(migrated_db, OTHER) == 0


def test_preflight_on_a_bare_database_says_apply_the_migrations(pg_db):
    with pytest.raises(PermanentWriteError, match="apply the migrations"):
        PostgresWriter(pg_db).preflight()
    with pytest.raises(PermanentWriteError, match="apply the migrations"):
        PostgresWriter(pg_db).write(rows(1))


def login_role(url: str, grants: str) -> str:
    """A new login role (cluster-wide, so uniquely named) with `grants` ({role} is its name); its URL."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create role {role} login password 'reader-password'")
        conn.execute(grants.format(role=role))
    return url.replace("postgres:pg-test-password", f"{role}:reader-password")


def test_a_non_superuser_acting_as_the_service_role_may_write(migrated_db):
    # A deployment's dedicated writer: a member of service_role that switches to it on connect.
    url = login_role(migrated_db, "grant service_role to {role}") + "?options=-c%20role%3Dservice_role"
    writer = PostgresWriter(url)
    writer.preflight()
    writer.write(rows(1))
    writer.write(rows(1))
    writer.close()
    assert visible_to(migrated_db, OWNER) == 3


def test_preflight_refuses_a_role_that_cannot_insert(migrated_db):
    reader_url = login_role(migrated_db, "grant usage on schema public to {role};"
                                         " grant select on public.training_predictions to {role}")
    with pytest.raises(PermanentWriteError, match="may not insert"):
        PostgresWriter(reader_url).preflight()
    with pytest.raises(PermanentWriteError, match="may not insert") as info:
        PostgresWriter(reader_url).write(rows(1))
    assert "reader-password" not in str(info.value)


def test_unreachable_is_transient_and_the_writer_recovers(migrated_db, postgres_server):
    writer = PostgresWriter(migrated_db, connect_timeout_s=2, max_attempts=1)  # one try: keep the test short
    writer.write(rows(1))
    with postgres_server.stopped():
        with pytest.raises(TransientWriteError) as info:
            writer.write(rows(2))  # the open connection is cut
        with pytest.raises(TransientWriteError):
            writer.write(rows(2))  # and a new one is refused
        assert "pg-test-password" not in str(info.value)
    writer.write(rows(2))  # reconnects by itself
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("select count(*) from public.training_predictions").fetchone()[0] == 6
    assert "<hidden>" in repr(writer) and "pg-test-password" not in repr(writer)
    writer.close()


def test_a_closed_port_is_transient_and_retried_within_the_write():
    writer = PostgresWriter("postgresql://u:hunter2@127.0.0.1:1/db", connect_timeout_s=1, max_attempts=2,
                            backoff_max_s=0.01)
    with pytest.raises(TransientWriteError, match="Postgres unreachable") as info:
        writer.write(rows(1))
    assert "hunter2" not in str(info.value)
    assert writer._retrying.statistics["attempt_number"] == 2


def test_a_row_the_table_refuses_is_permanent_and_names_the_fix(migrated_db):
    bad = rows(1)
    bad[1]["stop_reason"] = "timeout"  # not eos / length: the check constraint refuses it
    writer = PostgresWriter(migrated_db)
    with pytest.raises(PermanentWriteError, match="training_predictions_stop_reason_check"):
        writer.write(bad)
    writer.write(rows(1))  # one transaction per batch: nothing of the refused batch was stored
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("select count(*) from public.training_predictions").fetchone()[0] == 3
    bad = rows(2)
    bad[0]["user_id"] = "not-a-uuid"  # job ids are any text (job_abc123); user ids are UUIDs
    with pytest.raises(PermanentWriteError, match="sanitised"):
        writer.write(bad)
    writer.close()


def test_bad_rows_are_stored_sanitised_or_truncated_never_a_failed_round(migrated_db):
    bad = rows(7, n=4)
    bad[0]["prediction"] = "a\x00b"  # Postgres text cannot hold NUL
    bad[1]["prompt"] = "lone \ud800 surrogate"
    bad[2]["prediction"] = "x" * 1_000_000  # a 1 MB completion
    bad[3]["char_error_rate"] = float("nan")
    bad[3]["length_ratio"] = float("inf")
    writer = PostgresWriter(migrated_db, max_text_chars=100_000)
    writer.write(bad)
    writer.close()
    with psycopg.connect(migrated_db) as conn:
        got = conn.execute("select sample_index, prompt, prediction, text_truncated, char_error_rate, length_ratio"
                           " from public.training_predictions where step = 7 order by sample_index").fetchall()
    assert got[0][2] == "ab"
    assert got[1][1] == "lone \ufffd surrogate"
    assert len(got[2][2]) == 100_000 and got[2][3] is True and got[0][3] is False
    assert got[3][4] is None and got[3][5] is None


def test_cancel_ends_a_write_blocked_in_the_database_and_starts_no_other(migrated_db):
    """What BackgroundWriter.close() relies on: from another thread, cancel() ends the query in
    flight (here waiting on a lock another session holds) and no retry follows."""
    import threading

    writer, outcome = PostgresWriter(migrated_db, max_attempts=4), []
    writer.write(rows(1))  # connected, the table's shape read
    with psycopg.connect(migrated_db) as locker:
        locker.execute("begin")
        locker.execute("lock table public.training_predictions in access exclusive mode")

        def write():
            try:
                writer.write(rows(2))
            except TransientWriteError as e:
                outcome.append(str(e))

        thread = threading.Thread(target=write)
        thread.start()
        with psycopg.connect(migrated_db, autocommit=True) as watcher:
            while not watcher.execute("select exists (select 1 from pg_stat_activity where wait_event_type = 'Lock'"
                                      " and query like 'insert into%%')").fetchone()[0]:
                assert thread.is_alive()
        writer.cancel()
        thread.join(writer.cancel_bound_s)
        locker.execute("rollback")
    assert not thread.is_alive() and outcome and "cancel" in outcome[0]
    writer.close()
    with psycopg.connect(migrated_db) as conn:
        assert conn.execute("select count(*) from public.training_predictions where step = 2").fetchone()[0] == 0
