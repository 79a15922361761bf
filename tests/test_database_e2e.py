"""Training runs through the entrypoint writing to a real Postgres (the direct writer): every
round's rows exactly once, only for their owner — also when the database goes away."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import psycopg
import pytest

from tests.e2e import QUICK_TRAINING, ROOT, job_env, run_entrypoint, spool_rows, wait_for
from trainer.config import EXIT_PREFLIGHT

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OWNER = "11111111-1111-4111-8111-111111111111"
OTHER = "22222222-2222-4222-8222-222222222222"
JOB = "33333333-3333-4333-8333-333333333333"
PREDICTIONS = {"enabled": True, "sample_count": 4, "sample_frequency": "steps", "step_interval": 10, "max_new_tokens": 6}


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


def test_a_run_writes_every_round_once_readable_only_by_its_owner(pg_db, tmp_path):
    out = tmp_path / "out"
    proc = run_entrypoint(db_env(out, pg_db))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "predictions storage: Postgres, directly" in log
    assert "migrations: applied 20261122000100_training_predictions.sql" in log
    assert "preflight: ok" in log
    owner_view = stored(pg_db, OWNER)
    assert set(owner_view) == expected(40) and set(owner_view.values()) == {1}
    assert stored(pg_db, OTHER) == Counter()
    assert "database: 16 rows written, 0 failed" in log

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
    out = tmp_path / "out"
    env = db_env(out, pg_db, max_steps=400)
    proc = subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert wait_for(lambda: len(stored(pg_db)) > 0, timeout=300, interval=0.1), "no row arrived"
    postgres_server.stop()
    try:
        time.sleep(2)  # rounds fail meanwhile
    finally:
        postgres_server.start()
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-4000:]
    counts = stored(pg_db, OWNER)
    assert set(counts) == expected(400) and set(counts.values()) == {1}


def test_an_unreachable_database_stops_the_pod_before_the_model_loads(pg_db, tmp_path):
    env = job_env(tmp_path / "out", SUPABASE_URL="http://127.0.0.1:9", SUPABASE_SERVICE_KEY="sb_secret_canary",
                  JOB_ID=JOB, USER_ID=OWNER, PREDICTIONS_CONFIG=PREDICTIONS)
    proc = run_entrypoint(env, timeout=300)
    assert proc.returncode == EXIT_PREFLIGHT, proc.stdout + proc.stderr
    assert "preflight: FAILED" in proc.stdout and "launch:" not in proc.stdout  # no training process started
    assert "sb_secret_canary" not in proc.stdout + proc.stderr
