"""Surviving a pod restart: kill -9 after a checkpoint, start the same command again."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from predictions.store.spool import JsonlObjects
from predictions.store.writers.local import LocalJsonlWriter
from tests.e2e import (
    QUICK_TRAINING,
    ROOT,
    as_if_interrupted,
    job_env,
    kill_tree_hard,
    run_entrypoint,
    spool_rows,
    wait_for,
)
from trainer.checkpoints import MARKER, newest_complete
from trainer.pod.volume import end_torn_lines

# "baseline": False: the demo's own baseline round (a default that stays unless named) is not wanted here
PREDICTIONS = {"enabled": True, "sample_count": 5, "sample_frequency": "steps", "step_interval": 10, "max_new_tokens": 6,
               "baseline": False}
TRAINING = {**QUICK_TRAINING, "max_steps": 200, "save_steps": 50}
EXPECTED = {(s, i) for s in range(10, 201, 10) for i in range(5)}


def final_step(out: Path) -> int:
    return json.loads((out / "checkpoint-200" / "trainer_state.json").read_text())["global_step"]


@pytest.mark.slow
def test_killed_after_a_checkpoint_resumes_without_duplicate_predictions(tmp_path):
    out = tmp_path / "out"
    env = job_env(out, TRAINING_CONFIG=TRAINING, PREDICTIONS_CONFIG=PREDICTIONS)

    proc = subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: (out / "checkpoint-50" / MARKER).exists(), timeout=300), "no checkpoint came"
    finally:
        kill_tree_hard(proc)
    first = spool_rows(out)
    assert first and max(r["step"] for r in first) < 200  # killed mid-run

    again = run_entrypoint(env)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-4000:]
    assert "resume: from checkpoint-" in log
    resumed_from = int(log.split("resume: from checkpoint-")[1].split()[0])
    assert resumed_from >= 50
    assert final_step(out) == 200
    keys = Counter((r["step"], r["sample_index"]) for r in spool_rows(out))
    assert set(keys) == EXPECTED  # the same set as an uninterrupted run
    # A round the kill tore may be written again; a complete one never is.
    assert sum(n - 1 for n in keys.values()) < PREDICTIONS["sample_count"]


def test_a_torn_newest_checkpoint_is_skipped(tmp_path, caplog):
    for step, complete in ((10, True), (20, True), (30, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
        if complete:
            (folder / MARKER).write_text(f"{step}\n")
    caplog.clear()
    assert newest_complete(tmp_path) == tmp_path / "checkpoint-20"
    assert [r.getMessage() for r in caplog.records if r.name.startswith("trainer")] == ["resume: skipping checkpoint-30: incomplete (the pod stopped while it was being written)"]
    assert newest_complete(tmp_path / "empty-volume") is None


@pytest.mark.slow
def test_a_torn_checkpoint_on_the_volume_resumes_from_the_one_before(tmp_path):
    out = tmp_path / "out"
    env = job_env(out, TRAINING_CONFIG={**TRAINING, "max_steps": 60, "save_steps": 20}, PREDICTIONS_CONFIG=PREDICTIONS)
    first = run_entrypoint(env)
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    # Make checkpoint-60 torn (as if the pod died while writing it), drop the results after 40.
    (out / "checkpoint-60" / MARKER).unlink()
    (out / "checkpoint-60" / "optimizer.pt").write_bytes(b"torn")
    shutil.rmtree(out / "final")
    as_if_interrupted(out)
    before = Counter((r["step"], r["sample_index"]) for r in spool_rows(out))

    again = run_entrypoint(env)
    log = again.stdout + again.stderr
    assert again.returncode == 0, log[-4000:]
    assert "resume: skipping checkpoint-60: incomplete" in log and "resume: from checkpoint-40" in log
    assert "restart: 6 rounds already in predictions.jsonl" in log
    after = Counter((r["step"], r["sample_index"]) for r in spool_rows(out))
    assert after == before  # steps 50 and 60 were predicted already: not written twice


def test_a_restart_never_appends_onto_a_torn_spool_line(tmp_path, caplog):
    """A kill mid-write leaves the spool's last line cut; before the training processes append
    again the line is ended, so the next round's first row is a line of its own, not lost with it."""
    spool = tmp_path / "predictions.jsonl"
    LocalJsonlWriter(spool).write([{"step": 10, "sample_index": i} for i in range(2)])
    with spool.open("a") as f:
        f.write('{"step": 20, "sample_in')  # killed here
    end_torn_lines(tmp_path)
    end_torn_lines(tmp_path)  # a second restart changes nothing
    LocalJsonlWriter(spool).write([{"step": 20, "sample_index": i} for i in range(2)])
    lines = JsonlObjects(spool)
    assert [(r["step"], r["sample_index"]) for r in lines] == [(10, 0), (10, 1), (20, 0), (20, 1)]
    assert lines.skipped == [3]
    assert sum("was torn" in m for m in caplog.messages) == 1


@pytest.mark.postgres
def test_a_completed_job_whose_rows_were_not_delivered_delivers_them_on_restart(pg_db, tmp_path):
    """The database was away at the end: the job completed with its rows in the spool only. A
    restart says the job is complete (no training) and puts the rows in, once."""
    import psycopg

    from tests.test_postgres_writer import JOB, OWNER, rows
    from trainer.pod.state import write_state

    out = tmp_path / "out"
    LocalJsonlWriter(out / "predictions.jsonl").write(rows(2) + rows(4))
    write_state(out, job_id=JOB, status="completed", exit_code=0)
    env = job_env(out, SUPABASE_DB_URL=pg_db, JOB_ID=JOB, USER_ID=OWNER,
                  PREDICTIONS_CONFIG={"enabled": True, "sample_count": 3, "sample_frequency": "epoch"})
    for _ in range(2):  # a second restart stores nothing twice
        done = run_entrypoint(env, timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        assert "is already complete" in done.stderr + done.stdout and "launch:" not in done.stdout + done.stderr
    with psycopg.connect(pg_db) as conn:
        stored = conn.execute("select step, sample_index from training_predictions where job_id = %s", (JOB,)).fetchall()
    assert sorted(stored) == [(s, i) for s in (2, 4) for i in range(3)]
