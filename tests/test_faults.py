"""The fault suite: real runs of the entrypoint, fed what a hostile or careless user (or a broken
machine) gives it. Each case ends refused clearly (its exit code, a message naming the variable)
or handled (every row stored once, or in the spool) — never a traceback, a hang or a secret
printed. tests/faults.py keeps the totals; the session prints them as its last line.

Data faults are refused by the parent's data check before any model loads (seconds each); data
that is merely damaged is read by `check` (the same reader the training processes use), and one
real run trains on all of it at once.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e import QUICK_TRAINING, ROOT, job_env, kill_tree_hard, spool_rows, spool_rows_so_far, wait_for
from tests.faults import CANARY, Ended, judge, run
from tests.http_servers import FileServer, HubRefusals
from tests.platform_double import ALERT_PATH, METRICS_PATH, PlatformDouble
from tests.ports import free_port
from tests.procs import processes_with
from trainer.checkpoints import MARKER

pytestmark = pytest.mark.faults

BOM = b"\xef\xbb\xbf"
WORDS = "red blue green cat dog fox".split()
ROWS = [{"prompt": f"reverse: {WORDS[i % 6]} {WORDS[(i * 5 + 1) % 6]}",
         "completion": f"{WORDS[(i * 5 + 1) % 6]} {WORDS[i % 6]}"} for i in range(20)]
JSONL = b"".join(json.dumps(r).encode() + b"\n" for r in ROWS)
#: Every case runs as the platform's pod: its job lifecycle on (metrics and alerts to a double of its
#: routes), canaries in its secrets. A fault must not reach the user as a leaked token either.
JOB, OWNER = "job_faults", "11111111-1111-4111-8111-111111111111"
SECRETS = {"JOB_TOKEN": f"{CANARY}-job", "INTERNAL_API_KEY": f"{CANARY}-internal", "JOB_ID": JOB, "USER_ID": OWNER}
_PLATFORM: list[PlatformDouble] = []


def platform() -> PlatformDouble:
    """The platform's routes, one double for the module (started on first use)."""
    if not _PLATFORM:
        _PLATFORM.append(PlatformDouble(JOB, SECRETS["JOB_TOKEN"], SECRETS["INTERNAL_API_KEY"]))
    return _PLATFORM[0]


def lines_with(bad: bytes, at: int) -> bytes:
    """The 20 good rows with `bad` inserted as line `at` (1-based)."""
    rows = JSONL.splitlines()
    return b"\n".join([*rows[:at - 1], bad, *rows[at - 1:]]) + b"\n"


def env_for(tmp_path: Path, **values) -> dict[str, str]:
    """A local-mode job on the demo model, kept tiny."""
    values.setdefault("TRAINING_CONFIG", {**QUICK_TRAINING, "max_steps": 4, "save_strategy": "no"})
    values.setdefault("PREDICTIONS_CONFIG", {"enabled": True, "sample_count": 4, "sample_frequency": "steps",
                                             "step_interval": 2, "max_new_tokens": 4, "baseline": False})
    double = platform()
    routes = {"METRICS_API_URL": double.url + METRICS_PATH, "ALERT_API_URL": double.url + ALERT_PATH}
    return job_env(tmp_path / "out", **{**SECRETS, **routes, **values})


@pytest.fixture(scope="module")
def server():
    s = FileServer(
        {"/d/train.jsonl.gz": gzip.compress(JSONL), "/d/encoded.jsonl": gzip.compress(JSONL),
         "/d/damaged.jsonl": gzip.compress(BOM + lines_with(b"{not json", 4))},
        gzip_encoded={"/d/encoded.jsonl", "/d/damaged.jsonl"}, refuse={"/d/expired.jsonl.gz"}, canary=CANARY)
    yield s
    s.close()


# Damaged data, read: `check` reads every file as the training processes do, and exits 0.
HANDLED = {
    "invalid JSON line": (lines_with(b'{"prompt": "red",', 11), ["20 usable rows", "invalid JSON: 1 (line 11)"]),
    "BOM in JSONL": (BOM + JSONL, ["20 usable rows (20 prompt/completion)"]),
    "BOM in a JSON list": (BOM + json.dumps(ROWS).encode(), ["20 usable rows"]),
    "invalid UTF-8 in a row": (lines_with(b'{"prompt": "r\xffd", "completion": "x"}', 5),
                               ["20 usable rows", "invalid UTF-8: 1 (line 5)"]),
    "raw NUL in a string": (lines_with(b'{"prompt": "r\x00d", "completion": "x"}', 7),
                            ["20 usable rows", "NUL byte: 1 (line 7)"]),
    "data wrapper": (json.dumps({"data": ROWS}).encode(), ["20 usable rows"]),
    "gzip file": (gzip.compress(JSONL), ["20 usable rows"]),
}


@pytest.mark.parametrize("case", HANDLED)
def test_damaged_dataset_is_read_row_by_row(case, tmp_path):
    data, says = HANDLED[case]
    (tmp_path / "train.jsonl").write_bytes(data)
    judge(run(env_for(tmp_path, DATASET_PATH=str(tmp_path / "train.jsonl")), "check"),
          code=0, says=["DATASET_PATH", *says, "check: configuration, data and database are ready"])


def test_invalid_line_in_the_samples_file(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(JSONL)
    (tmp_path / "samples.jsonl").write_bytes(lines_with(b"{oops", 2))
    predictions = {"enabled": True, "sample_count": 4, "sample_frequency": "steps", "step_interval": 2,
                   "samples_path": str(tmp_path / "samples.jsonl")}
    judge(run(env_for(tmp_path, DATASET_PATH=str(tmp_path / "train.jsonl"), PREDICTIONS_CONFIG=predictions), "check"),
          code=0, says=["PREDICTIONS_CONFIG.samples_path", "20 usable rows", "invalid JSON: 1 (line 2)"])


@pytest.mark.parametrize("path", ["/d/train.jsonl.gz", "/d/encoded.jsonl"])
def test_gzip_over_http_as_bytes_or_content_encoding(server, path, tmp_path):
    judge(run(env_for(tmp_path, DATASET_PATH=server.signed(path)), "check"),
          code=0, says=[f"DATASET_PATH {server.url}{path}: 20 usable rows"])


# Data that cannot be used at all: the run itself is refused with 78, before the model loads.
def refused_data(tmp_path: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    (tmp_path / "none.jsonl").write_text('{"question_text": "no format"}\n{"prompt": "", "completion": "x"}\n')
    packed = gzip.compress(JSONL)
    (tmp_path / "cut.jsonl.gz").write_bytes(packed[:len(packed) // 2])
    (tmp_path / "train.jsonl").write_bytes(JSONL)
    (tmp_path / "folder").mkdir()
    (tmp_path / "one.jsonl").write_bytes(JSONL.splitlines(keepends=True)[0])
    return {
        "no usable row": ({"DATASET_PATH": str(tmp_path / "none.jsonl")},
                          ["DATASET_PATH", "no usable row", "fits no format: 1 (line 1)", "empty prompt: 1 (line 2)"]),
        "a directory": ({"DATASET_PATH": str(tmp_path / "folder")}, ["DATASET_PATH", "is a directory"]),
        "truncated gzip": ({"DATASET_PATH": str(tmp_path / "cut.jsonl.gz")},
                           ["DATASET_PATH", "cut.jsonl.gz: a gzip file that is truncated or corrupt"]),
        "samples without a usable row": (
            {"DATASET_PATH": str(tmp_path / "train.jsonl"),
             "PREDICTIONS_CONFIG": json.dumps({"enabled": True, "sample_count": 4, "samples_path": str(tmp_path / "none.jsonl")})},
            ["PREDICTIONS_CONFIG.samples_path", "no usable row"]),
        "eval_split leaving no evaluation row": (
            {"DATASET_PATH": str(tmp_path / "one.jsonl"),
             "TRAINING_CONFIG": json.dumps({**QUICK_TRAINING, "eval_split": 0.2, "eval_strategy": "epoch"})},
            ["TRAINING_CONFIG.eval_split", "leaves no row to evaluate on"]),
    }


@pytest.mark.parametrize("case", ["no usable row", "a directory", "truncated gzip", "samples without a usable row",
                                  "eval_split leaving no evaluation row"])
def test_unusable_data_is_refused_before_training(case, tmp_path):
    values, says = refused_data(tmp_path)[case]
    ended = run(env_for(tmp_path, **values))
    judge(ended, code=78, says=["data error:", *says])
    assert "launch:" not in ended.output  # refused in the parent: no training process started


def test_check_refuses_a_dataset_with_no_usable_row_naming_its_lines(tmp_path):
    values, says = refused_data(tmp_path)["no usable row"]
    judge(run(env_for(tmp_path, **values), "check"), code=78, says=["data error:", *says])


def test_expired_signed_url_is_refused_without_its_signature(server, tmp_path):
    judge(run(env_for(tmp_path, DATASET_PATH=server.signed("/d/expired.jsonl.gz"))),
          code=78, says=["DATASET_PATH", "403", "expired", f"{server.url}/d/expired.jsonl.gz"])


# The machine and the process count.
def test_output_dir_not_writable(tmp_path):
    (tmp_path / "a-file").write_text("x")
    env = env_for(tmp_path)
    env["OUTPUT_DIR"] = str(tmp_path / "a-file" / "out")  # under a file: no one can create it, not even root
    judge(run(env), code=78, says=["OUTPUT_DIR", "is not writable"])


@pytest.mark.parametrize("count", ["0", "999"])
def test_impossible_process_count(count, tmp_path):
    judge(run(env_for(tmp_path, NUM_PROCESSES=count)), code=78, says=["NUM_PROCESSES"])


# The database, in postgres mode.
def _postgres_env(tmp_path: Path, db_url: str) -> dict[str, str]:
    return env_for(tmp_path, SUPABASE_DB_URL=db_url, JOB_ID="33333333-3333-4333-8333-333333333333",
                   USER_ID="11111111-1111-4111-8111-111111111111")


def test_database_down_from_the_start(tmp_path):
    url = f"postgresql://postgres:{CANARY}@127.0.0.1:{free_port()}/postgres"
    judge(run(_postgres_env(tmp_path, url)), code=76, says=["SUPABASE_DB_URL", "cannot connect"])


@pytest.mark.postgres
def test_database_wrong_password(pg_db, tmp_path):
    url = pg_db.replace("pg-test-password", f"{CANARY}-wrong")
    judge(run(_postgres_env(tmp_path, url)), code=76, says=["SUPABASE_DB_URL", "password authentication failed"])


@pytest.mark.postgres
@pytest.mark.parametrize("grants, code", [
    ("grant usage on schema public to {role}; grant select on public.training_predictions to {role}", 76),
    # CREATE on the database: the migrations' log can be made but the table not changed.
    ("grant create on database {db} to {role}; grant usage on schema public to {role};"
     " grant select on public.training_predictions to {role}", 76),
])
def test_a_narrow_database_role_is_one_line_naming_the_fix_and_job_failed(grants, code, migrated_db, tmp_path):
    """A role with SELECT only, or CREATE on the database but no INSERT: exit 76/77 with the fix,
    `job_failed` sent, never a traceback."""
    import psycopg

    db = migrated_db.rsplit("/", 1)[1]
    role = f"narrow_{db}"  # roles are the server's, not the database's: one per test
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        conn.execute(f"create role {role} login password '{CANARY}-narrow'")
        conn.execute(grants.format(role=role, db=db))
    url = migrated_db.replace("postgres:pg-test-password", f"{role}:{CANARY}-narrow")
    before = len(platform().alerts)
    judge(run(_postgres_env(tmp_path, url)), code=code, says=["SUPABASE_DB_URL as the database's owner"])
    failed = [a for a in platform().alerts[before:] if a["type"] == "job_failed"]
    assert len(failed) == 1 and "owner" in failed[0]["error_message"], platform().alerts[before:]


# Real training runs.
@pytest.mark.slow
def test_a_run_on_damaged_data_trains_and_stores_every_row_once(server, tmp_path):
    """Content-Encoding gzip behind a signed URL, a BOM and an invalid line; a gzipped {"data"}
    evaluation file with a BOM; a samples file with a NUL line and an empty prompt: trained on,
    all of it, and every round writes all its samples."""
    (tmp_path / "eval.json.gz").write_bytes(gzip.compress(BOM + json.dumps({"data": ROWS[:6]}).encode()))
    # A raw NUL line, and a row with an empty prompt (it once sank every round): both skipped when read.
    samples = lines_with(b"\x00{", 3).splitlines()
    samples.insert(5, json.dumps({"prompt": "", "completion": "x"}).encode())
    (tmp_path / "samples.jsonl").write_bytes(b"\n".join(samples) + b"\n")
    predictions = {"enabled": True, "sample_count": 4, "sample_frequency": "steps", "step_interval": 2,
                   "max_new_tokens": 4, "baseline": False, "samples_path": str(tmp_path / "samples.jsonl")}
    env = env_for(tmp_path, DATASET_PATH=server.signed("/d/damaged.jsonl"), EVAL_DATASET_PATH=str(tmp_path / "eval.json.gz"),
                  PREDICTIONS_CONFIG=predictions)
    ended = run(env, timeout=400)
    rows = spool_rows(tmp_path / "out")
    keys = {(r["step"], r["sample_index"]) for r in rows}
    expected = {(step, i) for step in (2, 4) for i in range(4)}
    judge(ended, code=0, says=["invalid JSON: 1 (line 4)", "NUL byte: 1 (line 3)", "empty prompt: 1 (line 6)", "6 usable rows"],
          lost=len(expected - keys) + (len(rows) - len(keys)))
    assert keys == expected


@pytest.mark.slow
def test_sigterm_mid_run_flushes_the_spool_and_leaves_no_process(tmp_path):
    out = tmp_path / "out"
    env = env_for(tmp_path, TRAINING_CONFIG={**QUICK_TRAINING, "max_steps": 2000, "save_strategy": "no"},
                  PREDICTIONS_CONFIG={"enabled": True, "sample_count": 4, "sample_frequency": "steps",
                                      "step_interval": 5, "max_new_tokens": 4})
    proc = subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        started = wait_for(lambda: len({r["step"] for r in spool_rows_so_far(out)}) >= 2, timeout=300, interval=0.5)
        assert started, "no prediction round within 300s"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        kill_tree_hard(proc)
        output, code = proc.communicate()[0], None
    rows = spool_rows(out)  # every line parses: none torn
    by_step: dict[int, set[int]] = {}
    for r in rows:
        by_step.setdefault(r["step"], set()).add(r["sample_index"])
    complete = [s for s, idx in by_step.items() if idx == set(range(4))]
    # A round cut short by the signal is redone by a restart; every earlier round is whole, once.
    lost = sum(4 - len(idx) for s, idx in by_step.items() if s != max(by_step)) + (len(rows) - sum(map(len, by_step.values())))
    judge(Ended(code, output), code=128 + signal.SIGTERM, says=["got SIGTERM"], lost=lost, handled=True)
    assert len(complete) >= 2
    time.sleep(1)
    assert processes_with(str(out)) == [], "a training process outlived the entrypoint"


@pytest.mark.slow
@pytest.mark.postgres
def test_table_dropped_mid_run_keeps_every_row_in_the_spool(pg_db, tmp_path):
    import psycopg

    out = tmp_path / "out"
    env = _postgres_env(tmp_path, pg_db)
    # Long enough that the drop lands mid-run: with 8 steps, training could end (every round stored)
    # before the test saw the first rows and dropped the table, and then nothing failed to report.
    steps = 400
    env["TRAINING_CONFIG"] = json.dumps({**QUICK_TRAINING, "max_steps": steps, "save_strategy": "no"})
    proc = subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def stored() -> int:
        with psycopg.connect(pg_db, autocommit=True) as conn:
            return conn.execute("select count(*) from training_predictions").fetchone()[0]

    try:
        assert wait_for(lambda: len(spool_rows_so_far(out)) >= 4, timeout=300, interval=0.5), "no round within 300s"
        assert wait_for(lambda: stored() >= 4, timeout=60, interval=0.5)
        with psycopg.connect(pg_db, autocommit=True) as conn:
            conn.execute("drop table training_predictions cascade")
        output, _ = proc.communicate(timeout=300)
        ended = Ended(proc.returncode, output)
    except subprocess.TimeoutExpired:
        kill_tree_hard(proc)
        ended = Ended(None, proc.communicate()[0])
    keys = {(r["step"], r["sample_index"]) for r in spool_rows(out)}
    expected = {(step, i) for step in range(2, steps + 1, 2) for i in range(4)}
    judge(ended, code=0, says=["the rows stay in the spool: run `python entrypoint.py replay`"],
          lost=len(expected - keys), handled=True)


# The Supabase API misbehaving in front of the platform's table as it is (no added column, no unique
# key): a PostgREST stand-in that executes on a real Postgres, serving requests concurrently as
# PostgREST does: every row stored once, or refused clearly.
class Misbehaving:
    """Wraps the stand-in: the first `times` inserts of prediction rows answer 503 (`fail`), or
    (`hang`) are held uncommitted until the client's retry of them has arrived, then commit — an
    answer the client gave up on, committed after the retry's read; `refuse` answers 401."""

    def __init__(self, table, mode: str, times: int = 2):
        import threading

        self.table, self.mode, self.left = table, mode, times
        self.arrived, self.posts, self.held = threading.Condition(), 0, 0
        if hasattr(table, "before_commit"):
            table.before_commit = self.hold

    def hold(self, request) -> None:
        if self.mode != "hang" or self.left <= 0 or JOB.encode() not in request.content:  # not the probe
            return
        self.left -= 1
        with self.arrived:
            seen = self.posts
            if self.arrived.wait_for(lambda: self.posts > seen, timeout=120):  # a bound against a hang only
                self.held += 1

    def __call__(self, request):
        import httpx

        if self.mode == "refuse":
            return httpx.Response(401, json={"code": "PGRST301", "message": "JWSError JWSInvalidSignature"})
        is_rows = request.method == "POST" and request.url.path.endswith("/training_predictions")
        if is_rows:
            with self.arrived:
                self.posts += 1
                self.arrived.notify_all()
        if is_rows and self.mode == "fail" and self.left > 0 and JOB.encode() in request.content:
            self.left -= 1
            return httpx.Response(503, json={"code": "PGRST001", "message": "could not connect to the database"})
        return self.table(request)


def _supabase_case(tmp_path, mode: str, db_url: str | None = None) -> tuple[Ended, list, Misbehaving]:
    """The job against the stand-in on `db_url` (the platform's database), or the in-memory double."""
    from tests.postgrest_double import PostgrestDouble, serve

    if db_url is not None:
        import psycopg

        from tests.platform_db import make_platform_db
        from tests.postgrest_pg import PostgrestOnPostgres

        make_platform_db(db_url)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("insert into public.local_training_jobs values (%s, %s)", (JOB, OWNER))
        table = PostgrestOnPostgres(db_url)
    else:
        table = PostgrestDouble()
    fault = Misbehaving(table, mode)
    server = serve(fault, one_at_a_time=db_url is None)
    predictions = {"enabled": True, "sample_count": 4, "sample_frequency": "steps", "step_interval": 2,
                   "max_new_tokens": 4, "baseline": False, "write_timeout_s": 1}
    env = env_for(tmp_path, SUPABASE_URL=server.url,
                  SUPABASE_SERVICE_KEY=f"sb_secret_{CANARY}", PREDICTIONS_CONFIG=predictions)
    try:
        ended = run(env, timeout=400)
    finally:
        server.close()
    if db_url is None:
        return ended, [k for k in table.keys() if k[0] == JOB], fault
    with psycopg.connect(db_url) as conn:
        keys = conn.execute("select job_id, step, sample_index from public.training_predictions where job_id = %s",
                            (JOB,)).fetchall()
    return ended, keys, fault


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_supabase_answers_503_or_hangs_then_recovers_every_row_once(mode, tmp_path, pg_db):
    ended, keys, fault = _supabase_case(tmp_path, mode, pg_db)
    expected = {(JOB, step, i) for step in (2, 4) for i in range(4)}
    judge(ended, code=0, says=["database: 8 rows written"], lost=len(expected - set(keys)), handled=True)
    assert sorted(keys) == sorted(expected), "a row stored twice or never"
    if mode == "hang":
        assert fault.held == 2, "the retries did not race the uncommitted inserts"


def test_supabase_refusing_the_key_stops_the_pod_before_training(tmp_path):
    ended, keys, _ = _supabase_case(tmp_path, "refuse")
    judge(ended, code=77, says=["preflight: FAILED", "SUPABASE_SERVICE_KEY"])
    assert "launch:" not in ended.output and not keys
    assert [a["type"] for a in platform().alerts if (a.get("error_message") or "").startswith("preflight")] == ["job_failed"]


@pytest.mark.slow
def test_sigkill_then_restart_resumes_and_every_round_is_kept_once(tmp_path):
    """The pod killed outright (SIGKILL: no handler runs), then started again on the same volume."""
    out = tmp_path / "out"
    training = {**QUICK_TRAINING, "max_steps": 30, "save_strategy": "steps", "save_steps": 10}
    env = env_for(tmp_path, TRAINING_CONFIG=training)
    proc = subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # The checkpoint's marker, not its folder: a folder still being written is not resumed from.
        assert wait_for(lambda: (out / "checkpoint-10" / MARKER).exists() and len(spool_rows_so_far(out)) >= 8, timeout=300,
                        interval=0.2), "no checkpoint and two rounds within 300s"
    finally:
        kill_tree_hard(proc)
        proc.communicate()
    ended = run(env, timeout=400)
    rows = spool_rows(out)
    keys = {(r["step"], r["sample_index"]) for r in rows}
    expected = {(step, i) for step in range(2, 31, 2) for i in range(4)}
    judge(ended, code=0, says=["resume: from checkpoint-"], lost=len(expected - keys), handled=True)
    assert len(rows) - len(keys) <= 4, "more than the killed round's rows written twice"


@pytest.mark.slow
@pytest.mark.postgres
def test_a_check_constraint_rejecting_rows_keeps_them_in_the_spool_and_says_so(pg_db, tmp_path):
    """The database refuses one round (a constraint the image does not know): training goes on,
    the other rounds are stored once, the refused rows stay in the spool, counted, with the fix."""
    import psycopg

    env = _postgres_env(tmp_path, pg_db)
    assert run(env, "migrate").code == 0
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("alter table training_predictions add constraint no_step_four check (step <> 4)")
    ended = run(env, timeout=400)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        stored = {(s, i) for s, i in conn.execute("select step, sample_index from training_predictions")}
    spooled = {(r["step"], r["sample_index"]) for r in spool_rows(tmp_path / "out")}
    expected = {(step, i) for step in (2, 4) for i in range(4)}
    judge(ended, code=0, says=["4 failed", "python entrypoint.py replay"], lost=len(expected - spooled), handled=True)
    assert stored == {(2, i) for i in range(4)}


@pytest.mark.slow
def test_a_full_disk_is_said_plainly_and_the_predictions_are_kept(tmp_path):
    """OUTPUT_DIR on a 1 MB tmpfs: the spool fits, the final model does not."""
    out = tmp_path / "out"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        ended = run(env_for(tmp_path), timeout=300)
        keys = {(r["step"], r["sample_index"]) for r in spool_rows(out)}
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)
    expected = {(step, i) for step in (2, 4) for i in range(4)}
    judge(ended, code=74, says=["disk full: no space left", "job failed (exit 74)"], lost=len(expected - keys))
    assert [a["type"] for a in platform().alerts if "disk full" in (a.get("error_message") or "")] == ["job_failed"]


@pytest.mark.slow
def test_a_download_that_fills_the_disk_is_74_and_a_restart_tries_again(tmp_path):
    """The parent's download of DATASET_URL onto OUTPUT_DIR (a 1 MB tmpfs) runs out of space:
    74 with the disk-full message (not a data error, 78), no half file left, job_failed, and
    the job is not locked: the next start tries again (and fails the same way here)."""
    out = tmp_path / "out"
    out.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    big = FileServer({"/d/big.jsonl": JSONL * 2000})  # about 2.5 MB
    before = len(platform().alerts)
    try:
        env = env_for(tmp_path, DATASET_PATH=big.url + "/d/big.jsonl")
        first, again = run(env, timeout=120), run(env, timeout=120)
        left = [p.name for p in (out / "downloads").iterdir()] if (out / "downloads").is_dir() else []
    finally:
        big.close()
        subprocess.run(["umount", "-l", str(out)], capture_output=True)
    judge(first, code=74, says=["disk full: no space left", "a restart resumes"])
    assert "data error" not in first.output and "launch:" not in first.output
    assert left == []  # the partial download was removed
    assert "not the job's own fault" in again.output and again.code == 74, again.output[-3000:]
    assert [a["type"] for a in platform().alerts[before:] if "disk full" in (a.get("error_message") or "")] == [
        "job_failed", "job_failed"]  # one per start: each start is a new attempt


@pytest.fixture(scope="module")
def hub_refusals():
    s = HubRefusals()
    yield s
    s.close()


@pytest.mark.parametrize(("model", "hub", "code", "says"), [
    ("someone/typo-model", "double", 78, ["MODEL_NAME: no model 'someone/typo-model' on the Hugging Face Hub",
                                          "HF_TOKEN is not set"]),
    ("gated/model", "double", 78, ["MODEL_NAME: gated/model is a gated model", "set HF_TOKEN"]),
    ("someone/model", "offline", 69, ["MODEL_NAME: someone/model could not be fetched", "a restart tries again"]),
])
def test_a_model_that_cannot_be_fetched_is_one_line_naming_model_name(model, hub, code, says, hub_refusals,
                                                                       monkeypatch, tmp_path):
    """In the training process (the parent downloads nothing): a typo or a gated model is the
    configuration's (78: recorded, the job waits for a fix); no network is not the job's (69: a
    restart tries again, trainer/pod/job.py). No Hub traceback either way."""
    import huggingface_hub.constants as hub_constants

    from tests.env import set_job_env
    from trainer.child import child_main
    from trainer.config.load import load_config
    from trainer.model import load_tokenizer

    set_job_env(monkeypatch, tmp_path, MODEL_NAME=model, DATASET_PATH=str(tmp_path / "d.jsonl"))
    (tmp_path / "d.jsonl").write_text(JSONL.decode())
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # nothing cached
    if hub == "offline":
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    else:  # huggingface_hub keeps a client per endpoint: one double for the module
        monkeypatch.setattr(hub_constants, "ENDPOINT", hub_refusals.url)
        monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            hub_refusals.url + "/{repo_id}/resolve/{revision}/{filename}")
    cfg = load_config()
    assert child_main(lambda: load_tokenizer(cfg)) == code
    error = json.loads((tmp_path / "job_state.json").read_text())["error"]
    assert all(s in error for s in says), error
    assert "\n" not in error
