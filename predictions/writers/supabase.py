"""The Supabase writer: rows go to `training_predictions` through the REST API (PostgREST).

Only the service-role key writes (RLS lets nothing else insert). One batched upsert per request,
duplicates ignored on (job_id, step, sample_index), so a retried or replayed round never doubles
a row. Failures are sorted into TransientWriteError (retried here with tenacity) and
PermanentWriteError (never retried; the message says what to fix). The key never appears in a
message or a repr.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod
from supabase import ClientOptions, create_client
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter
from tenacity.wait import wait_base

from predictions.keys import key_role
from predictions.rows import CONFLICT_KEY, Generation, Sample, Scores, make_row
from predictions.sanitize import sanitize_row, split_by_bytes
from predictions.writers.base import PermanentWriteError, TransientWriteError

TABLE = "training_predictions"
ON_CONFLICT = ",".join(CONFLICT_KEY)

#: The preflight's probe row: a job id no job has, at a step no round has.
PROBE_JOB_ID = "00000000-0000-0000-0000-000000000000"
PROBE_STEP = -1

FIX_KEY = "the key was rejected: set SUPABASE_SERVICE_KEY to the project's service_role key"
FIX_RLS = (
    "row-level security rejected the insert: the key is not the service_role key; "
    "set SUPABASE_SERVICE_KEY"
)
FIX_TABLE = (
    f"table {TABLE} not found: apply the migrations (set SUPABASE_DB_URL) or run sql/ in the SQL editor"
)
FIX_COLUMN = (
    f"a column of {TABLE} is missing: the table is older than this image; apply the migrations "
    "(set SUPABASE_DB_URL) or run sql/ in the SQL editor"
)
FIX_CONSTRAINT = f"a row broke a constraint of {TABLE}: check that sql/ migrations match this image"

# Postgres / PostgREST codes that mean "the database is (momentarily) not there": connection
# exceptions (class 08), admin/crash shutdown, too many connections, serialization/deadlock,
# and PostgREST's own "could not connect / pool exhausted" codes.
TRANSIENT_CODES = {
    *("57P01", "57P02", "57P03", "53300", "40001", "40P01"),
    *("PGRST000", "PGRST001", "PGRST002", "PGRST003"),
}
JWT_CODES = {"PGRST300", "PGRST301", "PGRST302", "PGRST303"}
# httpx failures where the request may not have reached the server, or the answer was lost.
TRANSIENT_HTTPX = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, httpx.ProxyError)


def classify(status: int | None, code: str | None) -> type[TransientWriteError] | type[PermanentWriteError]:
    """Which failure an error response is, from its HTTP status and PostgREST/Postgres code.

    The code decides first (a 500 carrying 42P01 is the table's fault, not the server's); the
    status decides when the body has no code we know (a proxy's 502 page, a 429).
    """
    code = code or ""
    if status is not None and code == str(status):
        code = ""  # postgrest-py's stand-in when the body had no code (a 429 is not class 42)
    if code.startswith("08") or code in TRANSIENT_CODES:
        return TransientWriteError
    if code.startswith(("42", "23")) or code in JWT_CODES or code in {"PGRST204", "PGRST205"}:
        return PermanentWriteError
    if status is not None and (status >= 500 or status in (408, 429)):
        return TransientWriteError
    return PermanentWriteError


def fix_for(status: int | None, code: str | None, message: str) -> str:
    """The 'what to fix' sentence for a permanent failure."""
    code = code or ""
    lowered = message.lower()
    if code == "42501" and "row-level security" in lowered:
        return FIX_RLS
    if code == "42501":
        return (
            f"the key may not write {TABLE}: set SUPABASE_SERVICE_KEY to the service_role key "
            "and apply the migrations (they grant it)"
        )
    if status in (401, 403) or code in JWT_CODES:
        return FIX_KEY
    if status == 404 or code in {"PGRST205", "42P01"}:
        return FIX_TABLE
    if code in {"PGRST204", "42703"}:
        return FIX_COLUMN
    if status == 409 or code.startswith("23"):
        return FIX_CONSTRAINT
    return f"the request was refused (HTTP {status}); see the server's message"


class SupabaseWriter:
    """Writes prediction rows through the Supabase REST API with the service-role key.

    `wait` replaces the backoff between attempts (tests pass `tenacity.wait_none()`); by default
    exponential with jitter, capped at `backoff_max_s`. `http_client` replaces the HTTP client
    (tests pass one over `httpx.MockTransport`); by default HTTP/1.1 with a `timeout_s` timeout.
    """

    name = "supabase"

    def __init__(
        self,
        url: str,
        service_key: str,
        *,
        timeout_s: float = 30,
        max_request_bytes: int = 4_000_000,
        max_text_chars: int = 100_000,
        max_attempts: int = 6,
        backoff_max_s: float = 20,
        http_client: httpx.Client | None = None,
        wait: wait_base | None = None,
    ):
        assert max_attempts >= 1 and max_request_bytes > 0 and max_text_chars > 0
        self.url = url
        self._key = service_key
        self.max_request_bytes = max_request_bytes
        self.max_text_chars = max_text_chars
        self.max_attempts = max_attempts
        self.wait = wait if wait is not None else wait_exponential_jitter(initial=0.5, max=backoff_max_s)
        self._owns_http = http_client is None
        # HTTP/1.1: postgrest-py's own client speaks h2, where one GOAWAY fails every request
        # multiplexed on the connection; the explicit timeout bounds a hung request.
        self._http = http_client or httpx.Client(
            http2=False, timeout=httpx.Timeout(timeout_s), follow_redirects=True
        )
        # postgrest-py turns an error response into an APIError without its HTTP status, and
        # the status is what tells a 429 or a 503 from a 400 when the body has no code.
        self._status = threading.local()
        self._http.event_hooks["response"].append(self._remember_status)
        self._client = create_client(
            url,
            service_key,
            options=ClientOptions(
                # The client carries the timeout: given one, supabase-py ignores
                # postgrest_client_timeout (and would otherwise build an HTTP/2 client).
                httpx_client=self._http,
                # Retries are tenacity's, here, for every method: postgrest-py's own retry
                # covers GET/HEAD only and would multiply our attempts.
                postgrest_client_retry=False,
                auto_refresh_token=False,
                persist_session=False,
            ),
        )

    def __repr__(self) -> str:
        return f"SupabaseWriter(url={self.url!r}, key=<hidden>)"

    def _remember_status(self, response: httpx.Response) -> None:
        self._status.value = response.status_code

    # -- the protocol ---------------------------------------------------------------------------

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Sanitise, split into bodies under max_request_bytes, upsert each with retries."""
        clean = [sanitize_row(r, max_text_chars=self.max_text_chars) for r in rows]
        for chunk in split_by_bytes(clean, self.max_request_bytes):
            self._with_retries(lambda chunk=chunk: self._upsert(chunk), what=f"{len(chunk)} rows")

    def close(self) -> None:
        """Release the connections (only those of a client this writer made)."""
        if self._owns_http:
            self._http.close()

    def preflight(self) -> None:
        """Before training: the key is the service_role key, the table is there, a write passes.

        Raises PermanentWriteError naming the fix, or TransientWriteError if the server is
        unreachable (after the retries).
        """
        role = key_role(self._key)
        if role != "service_role":
            raise PermanentWriteError(
                f"SUPABASE_SERVICE_KEY is a {role or 'unrecognised'} key; the anon key cannot insert "
                "under RLS; set SUPABASE_SERVICE_KEY to the service_role key"
            )
        self._with_retries(self._check_table, what="table check")
        # The write check upserts a probe row and deletes it: it proves the grants, RLS and the
        # columns this image sends (a missing column is PGRST204 here, not mid-training). A
        # foreign-key error (23503: the nil ids name no job or user) proves it too: Postgres
        # checks privileges and RLS before constraints, so the key was allowed to insert. Other
        # constraint errors are raised: real rows would break them as well.
        try:
            self._with_retries(lambda: self._upsert([self._probe_row()]), what="write check")
        except PermanentWriteError as e:
            if getattr(e, "code", None) != "23503":
                raise
        self._with_retries(self._delete_probe, what="probe cleanup")

    # -- requests and their failures ------------------------------------------------------------

    def _upsert(self, rows: list[dict[str, Any]]) -> None:
        query = self._client.table(TABLE).upsert(
            rows,
            on_conflict=ON_CONFLICT,
            ignore_duplicates=True,  # first write wins: a replay never overwrites or doubles
            returning=ReturnMethod.minimal,  # nothing to read back; saves the response body
        )
        self._execute(query)

    def _check_table(self) -> None:
        self._execute(self._client.table(TABLE).select("id").limit(0))  # reads no row

    def _delete_probe(self) -> None:
        query = self._client.table(TABLE).delete(returning=ReturnMethod.minimal)
        self._execute(query.eq("job_id", PROBE_JOB_ID).eq("step", PROBE_STEP))

    def _execute(self, query: Any) -> None:
        """Run one request; any failure becomes a Transient- or PermanentWriteError."""
        self._status.value = None
        try:
            query.execute()
        except TRANSIENT_HTTPX as e:
            raise TransientWriteError(self._redact(f"{TABLE}: {type(e).__name__}: {e}")) from None
        except httpx.HTTPError as e:
            raise PermanentWriteError(self._redact(f"{TABLE}: {type(e).__name__}: {e}")) from None
        except APIError as e:
            raise self._error(e) from None

    def _error(self, e: APIError) -> TransientWriteError | PermanentWriteError:
        status = getattr(self._status, "value", None)
        server = e.message or ""
        if e.details and isinstance(e.details, str):
            server = f"{server} ({e.details[:300]})" if server else e.details[:300]
        kind = classify(status, e.code)
        said = f"HTTP {status}, {e.code or 'no code'}: {server}".strip()
        if kind is TransientWriteError:
            err: TransientWriteError | PermanentWriteError = TransientWriteError(
                self._redact(f"{TABLE}: {said}")
            )
        else:
            err = PermanentWriteError(self._redact(f"{fix_for(status, e.code, server)} [{said}]"))
        err.code, err.status = e.code, status  # type: ignore[attr-defined]
        return err

    def _with_retries(self, send: Any, *, what: str) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientWriteError),
            wait=self.wait,
            stop=stop_after_attempt(self.max_attempts),
            reraise=True,
        )
        try:
            retrying(send)
        except TransientWriteError as e:
            raise TransientWriteError(
                f"supabase: {what} not written after {self.max_attempts} attempts: {e}"
            ) from e

    def _redact(self, text: str) -> str:
        # Defence in depth: no message we build includes the key, but a server may echo it.
        return text.replace(self._key, "<hidden>") if self._key else text

    @staticmethod
    def _probe_row() -> dict[str, Any]:
        """A full row (every column this image sends) under the reserved probe key."""
        return make_row(
            job_id=PROBE_JOB_ID,
            user_id=PROBE_JOB_ID,
            epoch=0.0,
            step=PROBE_STEP,
            sample=Sample(0, "preflight probe", "", "preflight", 0, "samples", "preflight"),
            generation=Generation("", 0, 0, 0.0, "eos", 1, False, None, None),
            scores=Scores(True, 0.0, 1.0, 1.0, None, None, None),
        )
