"""predictions/store/replay.py: a spool replayed (even twice) puts every row in exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from predictions.store.replay import replay_spool
from predictions.store.rows import CONFLICT_KEY, Generation, Sample, Scores, make_row
from predictions.store.writers.base import TransientWriteError
from predictions.store.writers.local import LocalJsonlWriter


class TableDouble:
    """Keeps every row it is sent, duplicates too: what replay_spool sends, not what a database
    would keep (that is the real writers' business, tested on real Postgres below)."""

    name = "double"

    def __init__(self, fail_after: int | None = None):
        self.sent: list[dict] = []
        self.writes = 0
        self.fail_after = fail_after

    def write(self, rows):
        if self.fail_after is not None and self.writes >= self.fail_after:
            raise TransientWriteError("database away")
        self.writes += 1
        self.sent.extend(rows)

    def keys(self) -> list[tuple]:
        return sorted(tuple(r[k] for k in CONFLICT_KEY) for r in self.sent)

    def close(self):
        """Nothing held."""


def rows(step: int, n: int) -> list[dict]:
    return [
        make_row(
            job_id="job",
            user_id="user",
            epoch=step / 10,
            step=step,
            sample=Sample(i, f"prompt {i}", "truth", "pid", i, "dataset", "eval.jsonl"),
            generation=Generation("ans\ud800", 5, 7, 1.0, "eos", 64, False, None, None),
            scores=Scores({"exact_match": 0.0, "char_error_rate": float("nan"), "length_ratio": 1.0, "word_overlap": 0.25}),
        )
        for i in range(n)
    ]


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    local = LocalJsonlWriter(tmp_path / "predictions.jsonl")
    for step in (10, 20, 30):
        local.write(rows(step, 4))
    local.write(rows(20, 4))  # a restarted attempt spooled step 20 again
    return local.path


def test_a_batch_sends_each_key_once_even_when_the_spool_repeats_a_round(spool: Path):
    db = TableDouble()
    assert replay_spool(spool, db, batch_rows=100) == 12
    assert db.keys() == sorted(("job", s, i) for s in (10, 20, 30) for i in range(4))


@pytest.mark.postgres
def test_replaying_twice_into_the_platforms_table_stores_each_row_once(pg_db, tmp_path: Path):
    """Through the API (a PostgREST stand-in executing on Postgres) and straight to Postgres, into
    the platform's table as deployed (no unique key): the database keeps one row per key."""
    from tenacity import wait_none

    from predictions.store.writers.postgres import PostgresWriter
    from predictions.store.writers.supabase import SupabaseWriter
    from tests.platform_db import JOB, OWNER, make_platform_db
    from tests.postgrest_double import serve
    from tests.postgrest_pg import PostgrestOnPostgres

    make_platform_db(pg_db)
    local = LocalJsonlWriter(tmp_path / "predictions.jsonl")
    for step in (30, 40, 30):  # a restarted attempt spooled step 30 again
        local.write([{**r, "job_id": JOB, "user_id": OWNER} for r in rows(step, 4)])
    server = serve(PostgrestOnPostgres(pg_db), one_at_a_time=False)
    writers = [SupabaseWriter(server.url, "sb_secret_CANARY-replay", wait=wait_none()), PostgresWriter(pg_db)]
    try:
        for writer in writers * 2:
            assert replay_spool(local.path, writer, batch_rows=5) >= 8  # batches of 5: a repeat may be sent
    finally:
        for writer in writers:
            writer.close()
        server.close()
    with psycopg.connect(pg_db) as conn:
        stored = conn.execute("select step, sample_index, count(*) from public.training_predictions"
                              " where job_id = %s and step >= 30 group by 1, 2 order by 1, 2", (JOB,)).fetchall()
    assert stored == [(s, i, 1) for s in (30, 40) for i in range(4)]


def test_concurrent_replays_of_one_spool_store_each_row_once(pg_db, tmp_path: Path):
    """Two operators (or a pod's catch-up and an operator's `replay`) replay the same spool at the
    same moment, through the API (the stand-in served concurrently, on Postgres) and straight to
    Postgres, into the platform's table as deployed (no unique key): every row once."""
    import threading

    from tenacity import wait_none

    from predictions.store.writers.postgres import PostgresWriter
    from predictions.store.writers.supabase import SupabaseWriter
    from tests.platform_db import JOB, OWNER, make_platform_db
    from tests.postgrest_double import serve
    from tests.postgrest_pg import PostgrestOnPostgres

    make_platform_db(pg_db)
    local = LocalJsonlWriter(tmp_path / "predictions.jsonl")
    for step in (50, 60, 70):  # the platform's own rows of the job are at lower steps
        local.write([{**r, "job_id": JOB, "user_id": OWNER} for r in rows(step, 6)])
    server = serve(PostgrestOnPostgres(pg_db), one_at_a_time=False)
    writers = [SupabaseWriter(server.url, "sb_secret_CANARY-replay", wait=wait_none()) for _ in range(2)]
    writers += [PostgresWriter(pg_db) for _ in range(2)]
    start, errors = threading.Barrier(len(writers)), []

    def replay(writer):
        start.wait()  # all at once
        try:
            replay_spool(local.path, writer, batch_rows=4)
        except Exception as e:  # noqa: BLE001 — reported below
            errors.append(e)

    threads = [threading.Thread(target=replay, args=(w,)) for w in writers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        for writer in writers:
            writer.close()
        server.close()
    assert not errors and not any(t.is_alive() for t in threads), errors
    with psycopg.connect(pg_db) as conn:
        stored = conn.execute("select step, sample_index, count(*) from public.training_predictions"
                              " where job_id = %s and step >= 50 group by 1, 2 order by 1, 2", (JOB,)).fetchall()
    assert stored == [(s, i, 1) for s in (50, 60, 70) for i in range(6)]


def test_a_torn_last_line_is_skipped_and_counted(spool: Path, caplog):
    whole = spool.read_bytes()
    spool.write_bytes(whole + json.dumps(rows(40, 1)[0]).encode()[:50])  # killed mid-write
    db = TableDouble()
    replay_spool(spool, db)
    assert len(db.sent) == 12
    assert any("torn last line 17" in line for line in caplog.messages)
    assert any("1 line(s)" in line for line in caplog.messages)


def test_writer_errors_are_raised_and_a_rerun_completes(spool: Path):
    db = TableDouble(fail_after=1)
    with pytest.raises(TransientWriteError):
        replay_spool(spool, db, batch_rows=4)
    assert len(db.sent) == 4  # the batches before the failure were sent
    db.fail_after = None
    replay_spool(spool, db, batch_rows=4)
    assert set(db.keys()) == {("job", s, i) for s in (10, 20, 30) for i in range(4)}


def test_rows_are_limited_to_the_table_columns(tmp_path: Path):
    path = tmp_path / "spool.jsonl"
    path.write_text(json.dumps({**rows(1, 1)[0], "unknown_column": 1}) + "\n", encoding="utf-8")
    db = TableDouble()
    assert replay_spool(path, db) == 1
    assert "unknown_column" not in db.sent[0]


def test_replay_through_the_supabase_writer_sends_valid_bodies(spool: Path):
    # The spool keeps what the database cannot (lone surrogates, NaN); the writer sanitises it.
    import httpx
    from tenacity import wait_none

    from predictions.store.rows import COLUMN_TYPES
    from predictions.store.writers.supabase import SupabaseWriter
    from tests.postgrest_double import PostgrestDouble

    # The migrated table (user_id as text: these rows' owner is not a UUID), without its
    # description: sql/'s shape is assumed.
    table = PostgrestDouble({**COLUMN_TYPES, "user_id": "text"}, unique_key=True, describe=False)
    http = httpx.Client(transport=httpx.MockTransport(table))
    writer = SupabaseWriter("https://p.supabase.co", "sb_secret_x", http_client=http, wait=wait_none())
    assert replay_spool(spool, writer, batch_rows=100) == 12
    bodies = [json.loads(r.content.decode("utf-8")) for r in table.requests if r.method == "POST"]
    sent = [r for body in bodies for r in body]
    assert {r["prediction"] for r in sent} == {"ans\ufffd"}
    assert {r["char_error_rate"] for r in sent} == {None}


def test_a_spool_of_an_earlier_version_is_replayed_in_todays_types(tmp_path: Path):
    from predictions.store.spool import read_spool

    old = {"job_id": "j", "user_id": None, "epoch": 1.5, "step": 30, "sample_index": 0, "prompt": "q",
           "ground_truth": "a", "prediction": "a", "exact_match": True, "latency_ms": 41.7, "sample_source": "eval",
           "validation_pass": False, "validation_errors": ["not valid JSON: x"], "validation_kind": "json_schema"}
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps(old) + "\n")
    (row,) = read_spool(path, quiet=True)
    assert (row["epoch"], row["epoch_progress"], row["exact_match"], row["latency_ms"]) == (1, 1.5, 1.0, 42)
    assert row["sample_source"] == "dataset" and row["validation_kind"] == "json_parse+json_schema"
    assert row["validation_errors"] == [{"validator": "json_schema", "message": "not valid JSON: x", "detail": None}]
