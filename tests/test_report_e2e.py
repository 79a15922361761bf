"""`entrypoint.py report` and `diagnose` after one real short demo run writing to a real Postgres:
the report's figures match the rows, from the spool and from the database alike; diagnose passes
on the healthy database and names the fix for each broken part (policy, table, spool-only rows)."""

from __future__ import annotations

import re
import uuid
from statistics import mean

import psycopg
import pytest

from predictions.report.diagnose import FIX_MIGRATE, FIX_POLICY, run_checks
from predictions.report.history import spool_rows
from tests.e2e import QUICK_TRAINING, job_env, run_entrypoint
from tests.env import set_job_env
from trainer.config.environment import VARIABLES

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OWNER = "11111111-1111-4111-8111-111111111111"
JOB = "44444444-4444-4444-8444-444444444444"
PREDICTIONS = {"enabled": True, "sample_count": 4, "sample_frequency": "steps", "step_interval": 10,
               "max_new_tokens": 6, "baseline": True}


def env_for(out, url):
    return job_env(out, SUPABASE_DB_URL=url, JOB_ID=JOB, USER_ID=OWNER,
                   TRAINING_CONFIG={**QUICK_TRAINING, "save_strategy": "no", "max_steps": 30},
                   PREDICTIONS_CONFIG=PREDICTIONS)


@pytest.fixture(scope="module")
def run(postgres_server, tmp_path_factory):
    """One real run (demo model, 30 steps, a baseline and 3 rounds) into its own database."""
    name = f"test_report_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = postgres_server.url(name)
    out = tmp_path_factory.mktemp("report") / "out"
    proc = run_entrypoint(env_for(out, url))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    yield {"url": url, "out": out, "env": env_for(out, url), "log": proc.stdout}
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def rounds_lines(text: str) -> list[str]:
    """The rows of the printed rounds table (they start with a step number)."""
    table = text.split("prediction rounds", 1)[1].split("└", 1)[0]
    return [line for line in table.splitlines() if re.match(r"│\s+\d+ │", line)]


def test_the_run_names_the_report_and_writes_its_html(run):
    html = run["out"] / "predictions_report.html"
    assert f"predictions: report in {html}" in run["log"]
    assert "python entrypoint.py report" in run["log"]
    assert html.exists() and "<svg id=\"score-chart\"" in html.read_text()


def test_the_report_figures_match_the_rows_from_the_spool_and_the_database(run):
    rows = spool_rows(run["out"] / "predictions.jsonl", JOB)
    spool = run_entrypoint({**run["env"], "COLUMNS": "80"}, "report", "--from", "spool", timeout=300)
    assert spool.returncode == 0, spool.stdout + spool.stderr
    lines = rounds_lines(spool.stdout)
    assert len(lines) == 4  # the baseline and steps 10, 20, 30
    for line, step in zip(lines, (0, 10, 20, 30)):
        mine = [r for r in rows if r["step"] == step]
        cells = [c.strip() for c in line.strip("│").split("│")]
        assert int(cells[0]) == step and int(cells[2]) == len(mine) == 4
        assert cells[5] == f"{mean(r['exact_match'] for r in mine):.0%}"
        assert cells[6] == f"{mean(r['char_error_rate'] for r in mine):.3f}"
        assert cells[7] == f"{mean(r['word_overlap'] for r in mine):.3f}"
    assert max(len(line) for line in spool.stdout.splitlines()) <= 80

    database = run_entrypoint({**run["env"], "COLUMNS": "80"}, "report", timeout=300)
    assert database.returncode == 0, database.stdout + database.stderr
    assert "postgres table training_predictions" in database.stdout
    assert rounds_lines(database.stdout) == lines  # the same figures, read back from the table
    assert spool.stdout.split("samples (▼", 1)[1] == database.stdout.split("samples (▼", 1)[1]


def test_diagnose_passes_on_the_healthy_database_and_prints_no_secret(run):
    with psycopg.connect(run["url"], autocommit=True) as conn:  # as on Supabase: the publication exists
        if conn.execute("select 1 from pg_publication where pubname = 'supabase_realtime'").fetchone() is None:
            conn.execute("create publication supabase_realtime")
        if conn.execute("select 1 from pg_publication_tables where pubname = 'supabase_realtime' "
                        "and tablename = 'training_predictions'").fetchone() is None:
            conn.execute("alter publication supabase_realtime add table public.training_predictions")
    proc = run_entrypoint(run["env"], "diagnose", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failed" in proc.stdout and "[PASS] rows of the job: 4 rounds, 16 rows" in proc.stdout
    assert "pg-test-password" not in proc.stdout + proc.stderr


def test_diagnose_finds_rounds_only_in_the_spool_and_replay_fixes_it(run):
    with psycopg.connect(run["url"], autocommit=True) as conn:
        conn.execute("delete from public.training_predictions where job_id::text = %s and step >= 20", (JOB,))
    proc = run_entrypoint(run["env"], "diagnose", timeout=300)
    assert proc.returncode == 1
    assert "[FAIL] rows of the job: 2 rounds (8 rows) are only in the spool" in proc.stdout
    assert "fix: python entrypoint.py replay" in proc.stdout
    assert run_entrypoint(run["env"], "replay", timeout=300).returncode == 0
    assert run_entrypoint(run["env"], "diagnose", timeout=300).returncode == 0


def use_env(monkeypatch, out, url):
    set_job_env(monkeypatch, out, **{k: v for k, v in env_for(out, url).items() if k in VARIABLES})


def findings(d) -> dict[str, tuple[str, str | None]]:
    return {f.check: (f.status, f.fix) for f in d.findings}


def test_diagnose_a_table_without_the_owner_policy(migrated_db, monkeypatch, tmp_path):
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        for (name,) in conn.execute("select policyname from pg_policies where tablename = 'training_predictions' "
                                    "and cmd in ('SELECT', 'ALL')").fetchall():
            conn.execute(f'drop policy "{name}" on public.training_predictions')
    use_env(monkeypatch, tmp_path / "out", migrated_db)
    d = run_checks()
    assert findings(d)["row level security"] == ("fail", FIX_POLICY)
    assert findings(d)["table"][0] == "pass" and not d.ok


def test_diagnose_a_missing_table(pg_db, monkeypatch, tmp_path, caplog):
    use_env(monkeypatch, tmp_path / "out", pg_db)
    d = run_checks()
    assert findings(d)["table"] == ("fail", FIX_MIGRATE)
    assert findings(d)["unique key"][0] == "skip" and not d.ok
    assert "pg-test-password" not in caplog.text
