"""A training run through the entrypoint in Supabase mode against the platform's table as the
platform made it (no added columns, no unique key), served over real HTTP by the PostgREST double:
the startup report names what the table lacks and the command, training runs, and every row is
stored exactly once — also the round whose response was lost after its insert landed."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e import QUICK_TRAINING, job_env, run_entrypoint
from tests.postgrest_double import LostResponse, PostgrestDouble

pytestmark = pytest.mark.slow

JOB, OWNER = "33333333-3333-4333-8333-333333333333", "11111111-1111-4111-8111-111111111111"
PREDICTIONS = {"enabled": True, "sample_count": 4, "sample_frequency": "steps", "step_interval": 10, "max_new_tokens": 6,
               "baseline": False}  # the demo's baseline round stays unless named


def test_a_run_into_the_platforms_table_as_it_is_stores_every_row_once(tmp_path):
    lost = [LostResponse()]
    inserts = []

    def lose_the_second_rounds_response():
        inserts.append(1)
        if len(inserts) == 3 and lost:  # probe, round 1, round 2: round 2's response is lost
            raise lost.pop()

    table = PostgrestDouble(after_insert=lose_the_second_rounds_response)
    server = table.serve()
    try:
        env = job_env(tmp_path / "out", SUPABASE_URL=server.url,
                      SUPABASE_SERVICE_KEY="sb_secret_e2e-test-key", JOB_ID=JOB, USER_ID=OWNER,
                      TRAINING_CONFIG={**QUICK_TRAINING, "save_strategy": "no"}, PREDICTIONS_CONFIG=PREDICTIONS)
        proc = run_entrypoint(env)
    finally:
        server.close()
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "table: training_predictions lacks 7 column(s) this image writes: epoch_progress" in log
    assert "no unique key on (job_id, step, sample_index)" in log
    assert "SUPABASE_DB_URL=postgresql://… python entrypoint.py migrate" in log
    assert not lost, "the lost response never happened"
    counts = Counter((step, index) for _, step, index in table.keys())
    assert counts == Counter({(s, i): 1 for s in range(10, 41, 10) for i in range(4)})
    assert "database: 16 rows written, 0 failed" in log
    assert {type(r["epoch"]) for r in table.rows} == {int} and {r["exact_match"] for r in table.rows} <= {0.0, 1.0}
    assert "sb_secret_e2e-test-key" not in log
