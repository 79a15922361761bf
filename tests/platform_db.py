"""The platform's database as a fixture (tests/sql/platform_supabase.sql, written from PLATFORM.md
§1 and the platform's migrations), with platform-shaped rows as its own pods wrote them: plain
inserts, exact_match 1.0 / 0.0, integer epochs, a text job id, and one row stored twice (a
retried insert)."""

from __future__ import annotations

from pathlib import Path

import psycopg

SQL = Path(__file__).parent / "sql"
OWNER = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
JOB = "job_abc123"  # the platform's API docs' form of a job id
UUID_JOB = "33333333-3333-4333-8333-333333333333"
OTHER_JOB = "job_other"

#: (epoch, step, sample_index, exact_match) of the platform's rows for JOB; (0, 10, 1) is stored twice.
PLATFORM_ROWS = [(0, 10, 0, 1.0), (0, 10, 1, 0.0), (0, 10, 2, 0.0), (1, 20, 0, 1.0), (1, 20, 1, 1.0), (1, 20, 2, 0.0)]
DUPLICATE = (0, 10, 1, 0.0)


def _insert(conn: psycopg.Connection, job: str, user: str, epoch: int, step: int, index: int, exact: float) -> None:
    # The platform's PredictionsWriter._prepare_records: no on_conflict, no id, scores as floats.
    conn.execute(
        "insert into public.training_predictions (job_id, user_id, epoch, step, sample_index, prompt,"
        " ground_truth, prediction, exact_match, char_error_rate, length_ratio, word_overlap, prompt_id,"
        " source_index, sample_source, sample_source_id, prompt_tokens, completion_tokens, total_tokens,"
        " latency_ms, max_new_tokens, do_sample)"
        " values (%s, %s, %s, %s, %s, %s, 'paris', %s, %s, %s, 1.0, %s, 'ab12', %s, 'dataset', 'train.jsonl',"
        " 9, 2, 11, 42, 256, false)",
        (job, user, epoch, step, index, f"question {index}", "paris" if exact else "rome", exact,
         0.0 if exact else 0.8, 1.0 if exact else 0.0, index),
    )


def make_platform_db(url: str) -> None:
    """Turn the empty database at `url` into the platform's, with its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((SQL / "platform_supabase.sql").read_text())
        conn.execute("insert into auth.users values (%s), (%s)", (OWNER, OTHER))
        conn.execute("insert into public.local_training_jobs values (%s, %s), (%s, %s), (%s, %s)",
                     (JOB, OWNER, UUID_JOB, OWNER, OTHER_JOB, OTHER))
        for values in PLATFORM_ROWS:
            _insert(conn, JOB, OWNER, *values)
        _insert(conn, JOB, OWNER, *DUPLICATE)  # the retried insert's second copy, stored later
        _insert(conn, OTHER_JOB, OTHER, 0, 10, 0, 1.0)


def as_user(conn: psycopg.Connection, user: str | None) -> None:
    """Switch the transaction to the API's identity: `authenticated` with a JWT sub, or anon."""
    conn.execute("set local role " + ("authenticated" if user else "anon"))
    if user:
        conn.execute("select set_config('request.jwt.claims', %s, true)", ('{"sub": "%s"}' % user,))
