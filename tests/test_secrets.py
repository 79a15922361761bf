"""Secrets never leave the environment: with a recognisable canary in every secret variable, no
file under OUTPUT_DIR (training_args.bin unpickled included), no printed line and no process's argv
(/proc/PID/cmdline, read while the run goes on) contains one."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time

import psycopg
import pytest
import torch

from predictions.store.rows import COLUMN_TYPES
from tests.e2e import QUICK_TRAINING, ROOT, job_env, kill_tree_hard, run_entrypoint
from tests.platform_double import ALERT_PATH, METRICS_PATH, PlatformDouble
from tests.postgrest_double import PostgrestDouble
from tests.procs import descendants

pytestmark = [pytest.mark.slow]

CANARY = "CANARY7f3a"


def jwt(role: str, signature: str) -> str:
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")
    return f"{part({'alg': 'HS256'})}.{part({'role': role, 'iss': 'supabase'})}.{signature}"


@pytest.mark.postgres
def test_no_secret_in_outputs_logs_or_argv(pg_db, tmp_path):
    db_password = f"{CANARY}-db"
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute(f"create role migrator login superuser password '{db_password}'")
    db_url = pg_db.replace("postgres:pg-test-password", f"migrator:{db_password}")
    service_key = jwt("service_role", f"{CANARY}-service")
    api = PostgrestDouble(COLUMN_TYPES, unique_key=True, api_keys=[service_key])  # the migrated table
    server = api.serve()
    job, job_token, internal_key = "33333333-3333-4333-8333-333333333333", f"{CANARY}-job", f"{CANARY}-internal"
    routes = PlatformDouble(job, job_token, internal_key)  # the job token and internal key: its headers only
    out = tmp_path / "out"
    env = job_env(
        out,
        SUPABASE_URL=server.url,
        SUPABASE_SERVICE_KEY=service_key,
        SUPABASE_ANON_KEY=jwt("anon", f"{CANARY}-anon"),
        SUPABASE_DB_URL=db_url,
        JOB_ID=job,
        USER_ID="11111111-1111-4111-8111-111111111111",
        JOB_TOKEN=job_token,
        INTERNAL_API_KEY=internal_key,
        HF_TOKEN=f"hf_{CANARY}token",  # set, unused (no HF_REPO_NAME): still never shown
        METRICS_API_URL=routes.url + METRICS_PATH,
        ALERT_API_URL=routes.url + ALERT_PATH,
        TRAINING_CONFIG={**QUICK_TRAINING, "max_steps": 10, "save_steps": 5},
        PREDICTIONS_CONFIG={"enabled": True, "sample_count": 3, "sample_frequency": "steps", "step_interval": 5,
                            "max_new_tokens": 4},
    )
    try:
        proc, argv = run_watching_argv(env, tmp_path / "printed.txt")
    finally:
        server.close()
        routes.close()
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-4000:]
    # argv: every process of the run as /proc showed it while it ran (the launcher, accelerate's
    # within trainer/pod/supervise.py, and the training process among them: the check could see a
    # secret there).
    assert any("trainer.pod.supervise" in a for a in argv) and any("trainer.train" in a for a in argv), argv
    assert not [a for a in argv if CANARY in a]
    assert "role=service_role" in printed and "role=anon" in printed  # the report shows roles, not values
    assert CANARY not in printed
    assert routes.types() == ["job_started", "job_completed"] and routes.metrics, (routes.alerts, routes.refused)

    # The key went where it belongs: the API's headers, and nowhere else.
    posts = [r for r in api.requests if r.method == "POST" and "training_predictions" in r.url.path]
    assert posts and all(CANARY in r.headers.get("apikey", "") for r in posts)
    assert all(CANARY not in str(r.url) for r in api.requests)  # never in a URL

    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files) and any(p.name == "trainer_state.json" for p in files)
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), path
        if path.name == "training_args.bin":
            args = torch.load(path, weights_only=False)
            assert CANARY not in repr(vars(args)), path


def run_watching_argv(env: dict[str, str], log_path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the entrypoint to its end, reading every descendant's /proc/PID/cmdline as it runs."""
    argv: set[str] = set()
    with open(log_path, "w+") as log:
        proc = subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env, text=True, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                for pid in [proc.pid, *descendants(proc.pid)]:
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            argv.add(f.read().replace(b"\0", b" ").decode(errors="replace"))
                    except OSError:
                        continue  # ended while we looked
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                kill_tree_hard(proc)
        log.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, log.read(), ""), argv


SIGNED = f"?token={CANARY}-signature&X-Amz-Signature={CANARY}"


@pytest.mark.parametrize("where", [
    "DATASET_PATH",
    "samples_path",
])
def test_a_signed_url_is_never_printed(where, tmp_path):
    """A signed URL (its query is the credential; userinfo too) given as the dataset or the samples
    file: `check` downloads and reads it, and prints where it came from without the signature."""
    from tests.http_servers import FileServer
    from trainer.demo import TRAIN_FILE

    data = TRAIN_FILE.read_bytes()[:4000].rsplit(b"\n", 1)[0] + b"\n"
    server = FileServer({"/object/train.jsonl": data})
    try:
        url = server.url.replace("://", f"://user:{CANARY}-userinfo@") + "/object/train.jsonl" + SIGNED
        values = {"DATASET_PATH": url, "TRAINING_CONFIG": {"eval_strategy": "no"}} if where == "DATASET_PATH" else {
            "PREDICTIONS_CONFIG": {"samples_path": url, "enabled": True, "sample_count": 2}}
        proc = run_entrypoint(job_env(tmp_path / "out", **values), "check")
    finally:
        server.close()
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-3000:]
    assert f"{server.url}/object/train.jsonl: " in printed  # named, without its query
    assert CANARY not in printed
    assert all(CANARY not in p.name for p in (tmp_path / "out").rglob("*"))
