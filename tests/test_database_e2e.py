"""Training runs through the entrypoint writing to a real Postgres (the direct writer): every
round's rows exactly once, only for their owner — also when the database goes away."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import psycopg
import pytest

from tests.e2e import QUICK_TRAINING, ROOT, job_env, run_entrypoint, spool_rows, wait_for
from tests.platform_db import UUID_JOB, make_platform_db
from tests.platform_reads import read_side
from trainer.config.exits import EXIT_PREFLIGHT

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OWNER = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
JOB = UUID_JOB  # a job of the platform's local_training_jobs (tests/platform_db.py)
# "baseline": False: the demo's own baseline round (a default that stays unless named) is not wanted here
PREDICTIONS = {"enabled": True, "sample_count": 4, "sample_frequency": "steps", "step_interval": 10, "max_new_tokens": 6,
               "baseline": False}


def db_env(out, url, **training):
    return job_env(out, SUPABASE_DB_URL=url, JOB_ID=JOB, USER_ID=OWNER,
                   TRAINING_CONFIG={**QUICK_TRAINING, "save_strategy": "no", **training}, PREDICTIONS_CONFIG=PREDICTIONS)


def stored(url: str, as_user: str | None = None) -> Counter:
    with psycopg.connect(url) as conn:
        if conn.execute("select to_regclass('public.training_predictions')").fetchone()[0] is None:
            return Counter()  # not migrated yet
        if as_user:
            conn.execute("set local role authenticated")
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": as_user}),))
        rows = conn.execute("select step, sample_index from public.training_predictions where job_id = %s", (JOB,))
        return Counter(rows.fetchall())


def expected(last_step: int) -> set[tuple[int, int]]:
    return {(s, i) for s in range(10, last_step + 1, 10) for i in range(4)}


def test_a_run_into_the_platforms_table_writes_every_round_once_and_the_platform_reads_it(pg_db, tmp_path):
    # The platform's database (its table, its rows with a duplicate, its jobs, the Realtime
    # publication): the entrypoint's migrations upgrade it in place, then the run writes into it.
    make_platform_db(pg_db)
    out = tmp_path / "out"
    proc = run_entrypoint(db_env(out, pg_db))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "predictions storage: Postgres, directly" in log
    assert "migrations: applied 20261130000000_platform_contract.sql" in log
    assert "1 duplicate row(s) of a (job_id, step, sample_index) moved to training_predictions_duplicates" in log
    assert "preflight: ok" in log and "has every column and the unique key" in log
    owner_view = stored(pg_db, OWNER)
    assert set(owner_view) == expected(40) and set(owner_view.values()) == {1}
    assert stored(pg_db, OTHER) == Counter()
    assert "database: 16 rows written, 0 failed" in log
    with psycopg.connect(pg_db) as conn:  # the platform's routes, on this job
        reads = read_side(conn, JOB)
        assert reads["count"] == 16 and reads["realtime"] is True
        assert sorted((r["step"], r["sample_index"]) for r in reads["page"]) == sorted(expected(40))
        assert all(isinstance(r["epoch"], int) and r["exact_match"] in (0.0, 1.0) for r in reads["page"])
        assert sum(e[1] for e in reads["epochs"]) == 16 and [t[0] for t in reads["trends"]] == reads["epochs_distinct"]
        assert len(reads["compare"]) == 4  # sample 0 in each of the 4 rounds

    again = run_entrypoint(db_env(out, pg_db), "check")  # a second start: nothing pending, fast
    assert again.returncode == 0 and "migrations: nothing pending" in again.stdout


def test_database_away_for_the_whole_run_then_replay_puts_every_row_once(pg_db, postgres_server, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=db_env(out, pg_db),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # the database goes away once the parent has prepared it
        lines.append(line)
        if line.startswith("launch:"):
            postgres_server.stop()
            break
    try:
        lines += proc.stdout.readlines()
        assert proc.wait(timeout=600) == 0, "".join(lines)[-4000:]
    finally:
        postgres_server.start()
    log = "".join(lines)
    assert "rows were not delivered to postgres" in log and "catch-up failed" in log
    keys = Counter((r["step"], r["sample_index"]) for r in spool_rows(out))
    assert set(keys) == expected(40)  # every row is in the spool
    assert stored(pg_db) == Counter()

    for _ in range(2):  # replaying twice still stores each row once
        replay = run_entrypoint(db_env(out, pg_db), "replay")
        assert replay.returncode == 0, replay.stdout + replay.stderr
    owner_view = stored(pg_db, OWNER)
    assert set(owner_view) == expected(40) and set(owner_view.values()) == {1}


def test_database_stopped_mid_run_and_back_every_row_once(pg_db, postgres_server, tmp_path):
    """The database goes away after the first rows and stays away until a round has failed (its
    line read from the log, not a sleep); back, the later rounds go through and the catch-up at the
    end stores the failed ones: every row once."""
    out = tmp_path / "out"
    env = db_env(out, pg_db, max_steps=400)
    proc = subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: len(stored(pg_db)) > 0, timeout=300, interval=0.1), "no row arrived"
    lines, failed = [], False
    postgres_server.stop()
    try:
        for line in proc.stdout:  # until a round's write has failed (or the run ended)
            lines.append(line)
            if "rows was not written" in line:
                failed = True
                break
    finally:
        postgres_server.start()
    log = "".join(lines) + proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-4000:]
    assert failed, log[-4000:]
    assert "predictions: catching up" in log and "catch-up done" in log, log[-4000:]
    counts = stored(pg_db, OWNER)
    assert set(counts) == expected(400) and set(counts.values()) == {1}


def test_an_unreachable_database_stops_the_pod_before_the_model_loads(pg_db, tmp_path):
    env = job_env(tmp_path / "out", SUPABASE_URL="http://127.0.0.1:9", SUPABASE_SERVICE_KEY="sb_secret_canary",
                  JOB_ID=JOB, USER_ID=OWNER, PREDICTIONS_CONFIG=PREDICTIONS)
    proc = run_entrypoint(env, timeout=300)
    assert proc.returncode == EXIT_PREFLIGHT, proc.stdout + proc.stderr
    assert "preflight: FAILED" in proc.stdout and "launch:" not in proc.stdout  # no training process started
    assert "sb_secret_canary" not in proc.stdout + proc.stderr
