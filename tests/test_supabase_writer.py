"""predictions/store/writers/supabase.py against the PostgREST double (tests/postgrest_double.py) at the HTTP transport."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import httpx
import pytest
from tenacity import wait_none

from predictions.store.rows import COLUMN_TYPES, PLATFORM_COLUMNS, Generation, Sample, Scores, make_row, row_id
from predictions.store.sanitize import sanitize_row
from predictions.store.writers.base import PermanentWriteError, TransientWriteError
from predictions.store.writers.supabase import FIX_KEY, FIX_RLS, FIX_TABLE, SupabaseWriter
from tests.postgrest_double import PostgrestDouble

URL = "https://project.supabase.co"
SECRET = "sb_secret_do-not-leak-0123456789"
RLS_BODY = {"code": "42501", "message": 'new row violates row-level security policy for table "training_predictions"'}


def jwt(role: str) -> str:
    """A JWT-shaped key: only the payload's role claim is read."""
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")  # noqa: E731
    return f"{enc({'alg': 'HS256'})}.{enc({'role': role, 'iss': 'supabase'})}.signature-not-checked"


def row(i: int, prediction: str = "answer") -> dict:
    return make_row(
        job_id="11111111-1111-1111-1111-111111111111",
        user_id="22222222-2222-2222-2222-222222222222",
        epoch=1.0,
        step=10,
        sample=Sample(i, "prompt", "truth", "pid", i, "dataset", "eval.jsonl"),
        generation=Generation(prediction, 5, 7, float("nan"), "eos", 64, False, None, None),
        scores=Scores({"exact_match": 0.0, "char_error_rate": 0.5, "length_ratio": 1.0, "word_overlap": 0.25}),
    )


#: The service keys these tests write with: any other is answered 401 by the double.
SERVICE_KEYS = (SECRET, jwt("service_role"))


def migrated(*script) -> PostgrestDouble:
    """The migrated table (every column of this image, the unique key) in the PostgREST double,
    answering the next requests for the table from `script` (statuses, (status, body) pairs or
    exceptions: the faults and refusals under test) before it models them."""
    return PostgrestDouble(COLUMN_TYPES, unique_key=True, api_keys=SERVICE_KEYS, script=script)


def table_requests(server: PostgrestDouble) -> list[httpx.Request]:
    """The requests for the table (the description, GET /rest/v1/, left out)."""
    return [r for r in server.requests if r.url.path != "/rest/v1/"]


def writer(server: PostgrestDouble, key: str = SECRET, **kw) -> SupabaseWriter:
    http = httpx.Client(transport=httpx.MockTransport(server))
    return SupabaseWriter(URL, key, http_client=http, wait=wait_none(), **kw)


def test_the_upsert_request():
    server = migrated()
    rows = [row(0, "a\x00b"), row(1)]
    writer(server).write(rows)
    (req,) = table_requests(server)
    assert req.method == "POST" and req.url.path == "/rest/v1/training_predictions"
    assert parse_qs(req.url.query.decode())["on_conflict"] == ["job_id,step,sample_index"]
    assert req.headers["apikey"] == SECRET
    assert req.headers["authorization"] == f"Bearer {SECRET}"
    prefer = req.headers["prefer"]
    assert "resolution=ignore-duplicates" in prefer and "return=minimal" in prefer
    sent = json.loads(req.content)
    # Each row carries its id, derived from (job_id, step, sample_index): the same row, the same id.
    assert sent == [{**sanitize_row(r, max_text_chars=100_000), "id": row_id(r["job_id"], 10, r["sample_index"])}
                    for r in rows]
    assert sent[0]["prediction"] == "ab" and sent[0]["latency_ms"] is None


def test_retries_503_then_succeeds():
    server = migrated(503, 503)
    writer(server).write([row(0)])
    assert len(table_requests(server)) == 3


@pytest.mark.parametrize("drop", [httpx.RemoteProtocolError("server disconnected"), httpx.ConnectError("refused")])
def test_retries_a_dropped_connection(drop):
    server = migrated(drop)
    writer(server).write([row(0)])
    assert len(table_requests(server)) == 2


@pytest.mark.parametrize("status", [408, 429, 500, 502, 504, 520])
def test_transient_statuses_are_retried(status):
    server = migrated(status)
    writer(server).write([row(0)])
    assert len(table_requests(server)) == 2


def test_postgres_connection_codes_are_retried():
    server = migrated((503, {"code": "PGRST001", "message": "could not connect"}), (500, {"code": "57P01"}))
    writer(server).write([row(0)])
    assert len(table_requests(server)) == 3


def test_a_json_error_without_a_code_is_judged_by_its_status():
    # A gateway's JSON error carries no code: only the HTTP status tells 502 from 401.
    server = migrated((502, {"message": "Bad gateway"}), (401, {"message": "Invalid API key"}))
    with pytest.raises(PermanentWriteError, match="set SUPABASE_SERVICE_KEY"):
        writer(server).write([row(0)])
    assert len(table_requests(server)) == 2


def test_gives_up_after_max_attempts():
    server = migrated(*[503] * 10)
    with pytest.raises(TransientWriteError, match="after 4 attempts"):
        writer(server, max_attempts=4).write([row(0)])
    assert len(table_requests(server)) == 4


@pytest.mark.parametrize(
    "response, fix",
    [
        (401, FIX_KEY),
        (403, FIX_KEY),
        ((401, {"code": "PGRST301", "message": "JWT could not be decoded"}), FIX_KEY),
        ((403, RLS_BODY), FIX_RLS),
        ((401, RLS_BODY), FIX_RLS),
        ((404, {"code": "PGRST205", "message": "Could not find the table"}), FIX_TABLE),
        ((409, {"code": "23505", "message": "duplicate key"}), "constraint"),
        (409, "constraint"),
        ((400, {"code": "22P02", "message": "invalid input syntax for type uuid"}), "refused"),
    ],
)
def test_permanent_errors_are_not_retried(response, fix):
    # A 23505 is sent once more (a concurrent writer's row on the primary key: the key sees it then).
    again = 2 if isinstance(response, tuple) and response[1].get("code") == "23505" else 1
    server = migrated(*[response] * again)
    with pytest.raises(PermanentWriteError) as e:
        writer(server).write([row(0)])
    assert len(table_requests(server)) == again
    assert fix in str(e.value)


def test_the_key_is_never_shown():
    w = writer(migrated(*[503] * 3, (403, {"code": "42501", "message": f"echo {SECRET}"})), max_attempts=3)
    with pytest.raises(TransientWriteError) as transient:
        w.write([row(0)])
    with pytest.raises(PermanentWriteError) as permanent:
        w.write([row(0)])
    for text in (str(transient.value), repr(transient.value), str(permanent.value), repr(w), str(vars(w).get("url"))):
        assert SECRET not in text


def test_big_rounds_split_under_max_request_bytes():
    server = migrated()
    rows = [row(i, "x" * 2_000) for i in range(30)]
    writer(server, max_request_bytes=10_000).write(rows)
    assert len(table_requests(server)) > 1
    assert all(len(r.content) <= 10_000 for r in table_requests(server))
    sent = [r for req in table_requests(server) for r in json.loads(req.content)]
    assert [r["sample_index"] for r in sent] == list(range(30))


def test_empty_round_sends_nothing():
    server = migrated()
    writer(server).write([])
    assert table_requests(server) == []


@pytest.mark.parametrize("key", [jwt("anon"), "sb_publishable_abc", "not-a-key"])
def test_preflight_refuses_a_key_that_is_not_service_role_before_any_request(key):
    server = migrated()
    with pytest.raises(PermanentWriteError, match="set SUPABASE_SERVICE_KEY to the service_role key") as e:
        writer(server, key=key).preflight()
    assert table_requests(server) == []
    assert key not in str(e.value)


@pytest.mark.parametrize("key", [SECRET, jwt("service_role")])
def test_preflight_accepts_service_role_keys(key):
    server = migrated()
    writer(server, key=key).preflight()
    select, upsert, delete = table_requests(server)
    assert select.method == "GET" and parse_qs(select.url.query.decode())["limit"] == ["0"]
    probe = json.loads(upsert.content)
    assert upsert.method == "POST" and probe[0]["step"] == -1
    assert delete.method == "DELETE" and parse_qs(delete.url.query.decode())["step"] == ["eq.-1"]


def test_preflight_names_a_missing_table():
    server = PostgrestDouble(COLUMN_TYPES, exists=False)  # the migrations never ran
    with pytest.raises(PermanentWriteError, match="apply the migrations"):
        writer(server).preflight()


def test_preflight_reports_rls_on_the_probe_write():
    server = migrated((200, []), (403, RLS_BODY))
    with pytest.raises(PermanentWriteError, match="row-level security rejected the insert"):
        writer(server).preflight()


def test_preflight_probe_refused_by_a_constraint_still_proves_the_write():
    # A foreign key on the nil job id: privileges and RLS were checked before the constraint.
    server = migrated((200, []), (409, {"code": "23503", "message": "violates foreign key constraint"}))
    writer(server).preflight()
    assert [r.method for r in table_requests(server)] == ["GET", "POST", "DELETE"]


def test_preflight_unreachable_server_is_transient():
    server = migrated(*[httpx.ConnectError("refused")] * 3)
    with pytest.raises(TransientWriteError):
        writer(server, max_attempts=3).preflight()


def test_preflight_probe_refused_by_a_check_constraint_is_raised():
    server = migrated((200, []), (400, {"code": "23514", "message": "violates check constraint"}))
    with pytest.raises(PermanentWriteError, match="constraint"):
        writer(server).preflight()


# -- the platform's table as the platform made it: no added columns, no unique key -----------------

PLATFORM_JOB, OWNER = "job_abc123", "22222222-2222-4222-8222-222222222222"


def round_rows(step: int, n: int = 4) -> list[dict]:
    """One round as this image makes it: fractional epoch, float latency, extra metrics."""
    from predictions.scorer import score

    return [make_row(job_id=PLATFORM_JOB, user_id=OWNER, epoch=step / 10 + 0.5, step=step,
                     sample=Sample(i, f"q{i}", "Paris", "pid", i, "dataset", "train.jsonl"),
                     generation=Generation("paris" if i % 2 else "rome", 5, 2, 41.7, "eos", 8, False, None, None),
                     scores=score("paris" if i % 2 else "rome", "Paris"))
            for i in range(n)]


def platform_writer(table: PostgrestDouble) -> SupabaseWriter:
    return SupabaseWriter(URL, SECRET, http_client=httpx.Client(transport=httpx.MockTransport(table)), wait=wait_none())


def test_preflight_on_the_platforms_table_reports_what_it_lacks_and_the_command():
    table = PostgrestDouble()
    w = platform_writer(table)
    w.preflight()
    report = "\n".join(w.report())
    assert "lacks 7 column(s) this image writes: epoch_progress, temperature, top_p, stop_reason, text_truncated," \
           " metrics, generation_error" in report
    assert "no unique key on (job_id, step, sample_index)" in report
    assert "SUPABASE_DB_URL=postgresql://… python entrypoint.py migrate" in report
    assert table.rows == []  # the probe was removed
    assert "POST /rest/v1/training_predictions 42P10" in table.log  # ON CONFLICT refused: no key


def test_rows_are_stored_once_without_the_unique_key_also_when_a_lost_response_is_retried():
    lost = [httpx.ReadTimeout("the response never came")]

    def lose_one_response():
        if lost:
            raise lost.pop()  # after the rows were stored: the writer cannot know they were

    table = PostgrestDouble(after_insert=lose_one_response)
    w = platform_writer(table)
    w.preflight()
    w.write(round_rows(10))  # stored, then the response is lost: retried
    w.write(round_rows(10))  # the whole round again (a replay)
    w.write(round_rows(20)[:2])
    w.write(round_rows(20))  # half of it was there
    assert table.keys() == [(PLATFORM_JOB, s, i) for s in (10, 20) for i in range(4)]
    stored = table.rows[0]
    assert stored["epoch"] == 1 and stored["exact_match"] == 0.0 and stored["latency_ms"] == 42
    assert "epoch_progress" not in stored and "metrics" not in stored  # columns the table has not
    assert not lost and "POST /rest/v1/training_predictions 201" in table.log


def test_after_the_migration_the_same_writer_upserts():
    from predictions.store.rows import COLUMN_TYPES

    table = PostgrestDouble(COLUMN_TYPES, unique_key=True)
    w = platform_writer(table)
    w.preflight()
    assert w.report() == ["table: training_predictions has every column and the unique key this image uses"]
    w.write(round_rows(10))
    w.write(round_rows(10))
    assert table.keys() == [(PLATFORM_JOB, 10, i) for i in range(4)]
    assert table.rows[0]["epoch_progress"] == 1.5 and table.rows[1]["metrics"] == {"word_f1": 1.0}


def test_without_a_description_columns_and_the_key_are_learned_from_the_errors():
    table = PostgrestDouble(describe=False)  # a PostgREST with its OpenAPI output turned off
    w = platform_writer(table)
    w.write(round_rows(10))
    w.write(round_rows(10))
    assert table.keys() == [(PLATFORM_JOB, 10, i) for i in range(4)]
    assert sum("PGRST204" in line for line in table.log) == 7  # one per added column, once each
    assert table.log.count("POST /rest/v1/training_predictions 42P10") == 1


def test_a_needed_column_missing_is_refused_at_preflight_naming_it():
    columns = {k: v for k, v in PLATFORM_COLUMNS.items() if k != "prediction"}
    with pytest.raises(PermanentWriteError, match="has no column prediction: every prediction row needs it") as e:
        platform_writer(PostgrestDouble(columns)).preflight()
    assert "python entrypoint.py migrate" in str(e.value)


def test_values_are_sent_in_the_live_tables_types():
    # A table an earlier image version made: boolean exact_match, double epoch and latency.
    columns = {**PLATFORM_COLUMNS, "exact_match": "boolean", "epoch": "double precision", "latency_ms": "double precision"}
    table = PostgrestDouble(columns)
    w = platform_writer(table)
    w.write(round_rows(10))
    assert "exact_match is boolean, not double precision" in "\n".join(w.report())
    assert [r["exact_match"] for r in table.rows] == [False, True, False, True]
    assert {r["epoch"] for r in table.rows} == {1.0}


def test_a_value_the_column_cannot_read_is_permanent_and_says_so():
    table = PostgrestDouble({**PLATFORM_COLUMNS, "job_id": "uuid"})  # job ids must be UUIDs there
    with pytest.raises(PermanentWriteError, match="22P02.*invalid input syntax for type uuid"):
        platform_writer(table).write(round_rows(10))
    assert table.rows == []
