"""diagnose and the report in Supabase mode, against the PostgREST double (tests/postgrest_double.py;
no PostgREST server can run here): it answers the OpenAPI description at /rest/v1/ and paged selects
as PostgREST does, and checks what it is sent (the key's headers, the owner's filters, offset / limit)."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import httpx
import pytest

from predictions.report import sources
from predictions.report.diagnose import run_checks
from predictions.store.rows import COLUMN_TYPES, ROW_COLUMNS
from tests.postgrest_double import PostgrestDouble
from tests.test_history import new_row
from tests.test_supabase_writer import jwt

URL = "https://project.supabase.co"
SECRET = "sb_secret_canary-0123456789"
JOB = "44444444-4444-4444-8444-444444444444"
OWNER = "11111111-1111-4111-8111-111111111111"
#: What every read of the table carries: the owner's filters, the order, the columns, a page.
READ_AS_OWNER = {"job_id": f"eq.{JOB}", "user_id": f"eq.{OWNER}", "order": "step.asc,sample_index.asc",
                 "select": None, "offset": None, "limit": None}


def postgrest(rows: list[dict], key: str = SECRET, columns: dict[str, str] | None = COLUMN_TYPES) -> PostgrestDouble:
    """The shared PostgREST double holding `rows`: only `key` is let in (401 otherwise), `columns`
    None is a table the API does not have, and every read must be the owner's, ordered and paged."""
    server = PostgrestDouble(columns or {}, exists=columns is not None, api_keys=[key], require=READ_AS_OWNER)
    server.rows = rows
    return server


def stored_rows() -> list[dict]:
    rows = []
    for step in (0, 10, 20):
        for i in range(4):
            row = new_row(step, i, "a b" if step else "x", "a b")
            rows.append({**row, "job_id": JOB, "user_id": OWNER, "created_at": f"2026-11-30T21:0{step // 10}:00+00:00"})
    return rows


@pytest.fixture
def supabase_env(job_environ):
    def use(key: str):
        return job_environ(SUPABASE_URL=URL, SUPABASE_SERVICE_KEY=key, JOB_ID=JOB, USER_ID=OWNER)
    return use


def check(server: PostgrestDouble):
    d = run_checks(http_client=httpx.Client(transport=httpx.MockTransport(server)))
    assert all(r.method == "GET" for r in server.requests)  # diagnose only reads
    return d, {f.check: f for f in d.findings}


@pytest.mark.parametrize("key", [jwt("anon"), "sb_publishable_abc"])
def test_an_anon_key_fails_the_key_role_check_with_its_fix(supabase_env, key, caplog):
    supabase_env(key)
    d, found = check(postgrest(stored_rows(), key=key))
    assert found["key role"].status == "fail" and "service_role" in found["key role"].fix
    assert found["table"].status == "skip" and not d.ok
    assert key not in caplog.text


def test_a_service_key_through_the_api_alone(supabase_env, caplog):
    out = supabase_env(SECRET)
    out.mkdir()
    spool = [{**r, "job_id": JOB} for r in stored_rows()] + [{**new_row(30, i, "a b", "a b"), "job_id": JOB} for i in range(4)]
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in spool))
    d, found = check(postgrest(stored_rows()))
    assert [found[c].status for c in ("configuration", "storage mode", "key role", "table")] == ["pass"] * 4
    for name in ("row level security", "unique key", "realtime"):  # PostgREST cannot show these
        assert found[name].status == "warn" and "SUPABASE_DB_URL" in found[name].fix
    assert found["rows of the job"].status == "fail" and "steps 30" in found["rows of the job"].detail
    assert found["newest round"].status == "pass" and "step 20" in found["newest round"].detail
    assert not d.ok and SECRET not in caplog.text


def test_a_table_the_api_does_not_have(supabase_env):
    supabase_env(SECRET)
    d, found = check(postgrest([], columns=None))
    assert found["table"].status == "fail" and "migrations" in found["table"].fix
    assert found["rows of the job"].status == "skip"
    assert "entrypoint.py migrate" in found["table"].fix  # the one command the rest of the image names
    d, found = check(postgrest([], columns={c: COLUMN_TYPES[c] for c in ROW_COLUMNS if c != "prediction"}))
    assert found["table"].status == "fail" and "prediction" in found["table"].detail
    # Columns this image adds, missing (the platform's table before `migrate`): a warning, the checks go on.
    d, found = check(postgrest([], columns={c: COLUMN_TYPES[c] for c in ROW_COLUMNS[:-3]}))
    assert found["table"].status == "warn" and ROW_COLUMNS[-1] in found["table"].detail
    assert "entrypoint.py migrate" in found["table"].fix and found["rows of the job"].status != "skip"


@pytest.mark.postgres
@pytest.mark.parametrize("through", ["sql", "api"])
def test_on_the_platforms_table_as_deployed_the_rows_reach_their_owner_and_diagnose_passes(through, pg_db, job_environ):
    """The platform's table, never migrated (no added column, no unique key, not in the publication),
    with its rows: diagnose answers its question (the owner reads the job's rows) with warnings whose
    fix is `migrate`, and exits 0. Through the API: a PostgREST stand-in executing on the database."""
    from predictions.report.diagnose import diagnose_command
    from tests.platform_db import JOB as PLATFORM_JOB
    from tests.platform_db import make_platform_db
    from tests.postgrest_pg import PostgrestOnPostgres

    make_platform_db(pg_db)
    env = {"SUPABASE_DB_URL": pg_db} if through == "sql" else {"SUPABASE_URL": URL, "SUPABASE_SERVICE_KEY": SECRET}
    job_environ(JOB_ID=PLATFORM_JOB, USER_ID=OWNER, **env)
    http = httpx.Client(transport=httpx.MockTransport(PostgrestOnPostgres(pg_db)))
    d = run_checks(http_client=http)
    found = {f.check: f for f in d.findings}
    assert found["table"].status == "warn" and "epoch_progress" in found["table"].detail
    assert found["rows of the job"].status == "pass" and "2 rounds" in found["rows of the job"].detail
    assert found["unique key"].status == "warn" and found["realtime"].status == "warn"
    if through == "sql":
        assert found["row level security"].status == "pass" and "the owner reads all 7 rows" in found["row level security"].detail
        assert "derived" in found["unique key"].detail and "migrate" in found["unique key"].fix
        assert "not in the supabase_realtime publication" in found["realtime"].detail
    assert d.ok and diagnose_command(http_client=http) == 0


@pytest.mark.postgres
def test_on_a_plain_postgresql_where_nothing_is_wrong_diagnose_passes(migrated_db, job_environ):
    job_environ(JOB_ID=JOB, USER_ID=OWNER, SUPABASE_DB_URL=migrated_db)
    d = run_checks()
    found = {f.check: f for f in d.findings}
    assert found["realtime"].status == "warn" and "nothing to do outside Supabase" in found["realtime"].fix
    assert [f.check for f in d.findings if f.status == "fail"] == [] and d.ok


def test_the_report_reads_the_table_page_by_page_as_its_owner(monkeypatch):
    monkeypatch.setattr(sources, "PAGE_ROWS", 5)
    server = postgrest(stored_rows())
    rows = sources.supabase_rows(URL, SECRET, JOB, OWNER, http_client=httpx.Client(transport=httpx.MockTransport(server)))
    assert [(r["step"], r["sample_index"]) for r in rows] == [(s, i) for s in (0, 10, 20) for i in range(4)]
    assert all(r.method == "GET" for r in server.requests)
    assert [parse_qs(r.url.query.decode())["offset"] for r in server.requests] == [["0"], ["5"], ["10"]]
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)


def test_diagnose_through_the_entrypoint_never_prints_a_secret(tmp_path):
    from tests.e2e import job_env, run_entrypoint

    canary = "sb_secret_canary-do-not-print"
    env = job_env(tmp_path / "out", SUPABASE_URL="http://127.0.0.1:9", SUPABASE_SERVICE_KEY=canary,
                  SUPABASE_ANON_KEY=jwt("anon"), JOB_ID=JOB, USER_ID=OWNER)
    proc = run_entrypoint(env, "diagnose", timeout=120)
    assert proc.returncode == 1
    assert "[PASS] key role" in proc.stdout and "[FAIL] table: the API did not answer" in proc.stdout
    assert canary not in proc.stdout + proc.stderr and jwt("anon") not in proc.stdout + proc.stderr

    bad = run_entrypoint(job_env(tmp_path / "out", TRAINING_CONFIG='{"epochs": 1}'), "diagnose", timeout=120)
    assert bad.returncode == 1 and "[FAIL] configuration: TRAINING_CONFIG.epochs: unknown key" in bad.stdout


def test_an_unreachable_database_url_is_a_failure_without_its_password(job_environ, caplog):
    password = "pw-canary-0123456789"
    job_environ(SUPABASE_DB_URL=f"postgresql://writer:{password}@127.0.0.1:9/postgres", JOB_ID=JOB, USER_ID=OWNER)
    d = run_checks()
    assert d.findings[-1].check == "database" and d.findings[-1].status == "fail"
    assert "SUPABASE_DB_URL" in d.findings[-1].fix and not d.ok
    assert password not in caplog.text
