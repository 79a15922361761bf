"""predictions/store/replay.py: a spool replayed (even twice) puts every row in exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from predictions.store.replay import replay_spool
from predictions.store.rows import CONFLICT_KEY, Generation, Sample, Scores, make_row
from predictions.store.writers.base import TransientWriteError
from predictions.store.writers.local import LocalJsonlWriter


class TableDouble:
    """Upserts into a dict keyed by CONFLICT_KEY with duplicates ignored, as the table does."""

    name = "double"

    def __init__(self, fail_after: int | None = None):
        self.table: dict[tuple, dict] = {}
        self.writes = 0
        self.fail_after = fail_after

    def write(self, rows):
        if self.fail_after is not None and self.writes >= self.fail_after:
            raise TransientWriteError("database away")
        self.writes += 1
        for r in rows:
            self.table.setdefault(tuple(r[k] for k in CONFLICT_KEY), r)

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


def test_replaying_twice_stores_each_row_once(spool: Path):
    db = TableDouble()
    first = replay_spool(spool, db, batch_rows=5)
    second = replay_spool(spool, db, batch_rows=5)
    assert first == second >= 12
    assert sorted(db.table) == sorted(("job", s, i) for s in (10, 20, 30) for i in range(4))


def test_a_torn_last_line_is_skipped_and_counted(spool: Path, caplog):
    whole = spool.read_bytes()
    spool.write_bytes(whole + json.dumps(rows(40, 1)[0]).encode()[:50])  # killed mid-write
    db = TableDouble()
    replay_spool(spool, db)
    assert len(db.table) == 12
    assert any("torn last line 17" in line for line in caplog.messages)
    assert any("1 line(s)" in line for line in caplog.messages)


def test_writer_errors_are_raised_and_a_rerun_completes(spool: Path):
    db = TableDouble(fail_after=1)
    with pytest.raises(TransientWriteError):
        replay_spool(spool, db, batch_rows=4)
    db.fail_after = None
    replay_spool(spool, db, batch_rows=4)
    assert len(db.table) == 12


def test_rows_are_limited_to_the_table_columns(tmp_path: Path):
    path = tmp_path / "spool.jsonl"
    path.write_text(json.dumps({**rows(1, 1)[0], "unknown_column": 1}) + "\n", encoding="utf-8")
    db = TableDouble()
    assert replay_spool(path, db) == 1
    assert "unknown_column" not in next(iter(db.table.values()))


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
