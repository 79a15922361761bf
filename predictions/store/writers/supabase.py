"""The Supabase writer: rows go to `training_predictions` through the REST API (PostgREST).

Only the service-role key writes (the platform's pods write with it). The writer adapts to the
live table, which it reads at preflight from PostgREST's OpenAPI description: it sends only the
columns the table has, in their types (predictions/store/tableshape.py). With the unique key on
(job_id, step, sample_index) one batched upsert per request ignores duplicates; without it (the
platform's table as the platform made it: ON CONFLICT answers 42P10) the upsert is on the primary
key `id`, which every row derives from its (job_id, step, sample_index) (rows.row_id). Either way
a retried, replayed or concurrent insert never doubles a row. Failures are sorted into TransientWriteError (retried here with tenacity) and
PermanentWriteError (never retried; the message says what to fix). The key never appears in a
message or a repr.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from typing import Any

import httpx
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod
from supabase import ClientOptions, create_client
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_when_event_set, wait_exponential_jitter
from tenacity.wait import wait_base

from predictions.store.keys import key_role
from predictions.store.rows import CONFLICT_KEY, Generation, Sample, Scores, make_row
from predictions.store.sanitize import sanitize_row, split_by_bytes
from predictions.store.tableshape import MIGRATE_COMMAND, TableShape
from predictions.store.writers.base import PermanentWriteError, TransientWriteError
from trainer.redact import hide

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
FIX_TABLE = f"table {TABLE} not found: apply the migrations once: {MIGRATE_COMMAND}"
FIX_COLUMN = f"a column of {TABLE} is missing: the table is older than this image; run once: {MIGRATE_COMMAND}"
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


def _unknown_column(e: Exception) -> str | None:
    """The column of a PGRST204 ("Could not find the 'x' column of 'training_predictions' …")."""
    if getattr(e, "code", None) != "PGRST204":
        return None
    found = re.search(r"the '([^']+)' column", str(e))
    return found.group(1) if found else None


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
        self._cancelled = threading.Event()
        self.cancel_bound_s = timeout_s + 5  # one request in flight when cancel() comes, then nothing
        # HTTP/1.1: postgrest-py's own client speaks h2, where one GOAWAY fails every request
        # multiplexed on the connection; the explicit timeout bounds a hung request.
        self._http = http_client or httpx.Client(
            http2=False, timeout=httpx.Timeout(timeout_s), follow_redirects=True
        )
        # postgrest-py turns an error response into an APIError without its HTTP status, and
        # the status is what tells a 429 or a 503 from a 400 when the body has no code.
        self._status = threading.local()
        self._http.event_hooks["response"].append(self._remember_status)
        self._shape: TableShape | None = None
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
        """Sanitise, split into bodies under max_request_bytes, store each with retries."""
        if not rows:
            return
        shape = self.table_shape()
        clean = [sanitize_row(r, max_text_chars=self.max_text_chars) for r in rows]
        for chunk in split_by_bytes([shape.adapt(r) for r in clean], self.max_request_bytes):
            # The whole store (read + insert without the key) is one attempt: a retry after a
            # timeout whose insert did land reads that row back and does not insert it again.
            self._with_retries(lambda chunk=chunk: self._store(chunk), what=f"{len(chunk)} rows")

    def table_shape(self) -> TableShape:
        """The live table's columns and types (read once, from PostgREST's OpenAPI description)."""
        if self._shape is None:
            self._with_retries(self._describe_table, what="table description")
        assert self._shape is not None
        return self._shape

    def report(self) -> list[str]:
        """Startup report lines about the table (after preflight): what it lacks, the fix."""
        return self.table_shape().report()

    def cancel(self) -> None:
        """From another thread: no new request, no more waiting between attempts (base.py)."""
        self._cancelled.set()

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
        shape = self.table_shape()
        shape.check_needed()
        # The write check stores a probe row and deletes it: it proves the grants, RLS and the
        # columns sent, and finds out whether the unique key exists. A foreign-key error (23503:
        # the nil ids name no job or user) proves it too: Postgres checks privileges and RLS
        # before constraints, so the key was allowed to insert. Other constraint errors are
        # raised: real rows would break them as well.
        try:
            self._with_retries(lambda: self._store([shape.adapt(self._probe_row())]), what="write check")
        except PermanentWriteError as e:
            if getattr(e, "code", None) != "23503":
                raise
        self._with_retries(self._delete_probe, what="probe cleanup")

    # -- requests and their failures ------------------------------------------------------------

    def _describe_table(self) -> None:
        """Read the table's columns and types from PostgREST's OpenAPI description (GET /rest/v1/,
        service key): definitions.training_predictions.properties.<column>.format is the Postgres
        type. A server that does not describe itself leaves the shape sql/ makes; unknown columns
        are then learned from PGRST204 at the first write."""
        try:
            response = self._http.get(
                f"{self.url.rstrip('/')}/rest/v1/",
                headers={"apikey": self._key, "Authorization": f"Bearer {self._key}",
                         "Accept": "application/openapi+json"},
            )
        except TRANSIENT_HTTPX as e:
            raise TransientWriteError(
                hide(f"{TABLE}: describing the table: {type(e).__name__}: {e}", self._key)) from None
        if classify(response.status_code, None) is TransientWriteError:  # 5xx, 408, 429: try again
            raise TransientWriteError(f"{TABLE}: describing the table: HTTP {response.status_code}")
        try:
            spec = response.json() if response.status_code == 200 else {}
        except ValueError:
            spec = {}
        properties = (spec.get("definitions") or {}).get(TABLE, {}).get("properties") if isinstance(spec, dict) else None
        if isinstance(properties, dict) and properties:
            self._shape = TableShape({name: str(p.get("format") or "") for name, p in properties.items()})
        else:
            self._shape = TableShape.assumed()

    def _store(self, rows: list[dict[str, Any]]) -> None:
        """Store rows once. With the unique key: an upsert on it, duplicates ignored. Without it (the
        platform's table as deployed): an upsert on the primary key `id`, which each row derives from
        its (job_id, step, sample_index) — an insert sent twice (a retry after a response that was
        lost or committed late, a replay, a second writer) is a conflict, never a second row. Only
        a table without a uuid `id` falls back to reading which samples are stored. A column the
        server does not know (PGRST204) is dropped from the shape and the rows sent again without it."""
        shape = self.table_shape()
        while True:
            try:
                if shape.unique_key is not False:
                    try:
                        self._upsert_on_key(rows)
                        shape.unique_key = True
                        return
                    except PermanentWriteError as e:
                        if getattr(e, "code", None) != "42P10":  # no unique key for ON CONFLICT
                            raise
                        shape.unique_key = False
                if shape.derived_ids:
                    self._upsert(self._not_stored_earlier(rows), on_conflict="id")
                else:
                    self._insert_missing(rows)
                return
            except PermanentWriteError as e:
                column = _unknown_column(e)
                if column is None or column not in shape.columns:
                    raise
                shape.drop(column)  # raises for a needed column
                rows = [{k: v for k, v in r.items() if k != column} for r in rows]

    def _upsert_on_key(self, rows: list[dict[str, Any]]) -> None:
        try:
            self._upsert(rows, on_conflict=ON_CONFLICT)
        except PermanentWriteError as e:
            # Two writers inserting the same new row at once: ON CONFLICT's target is the unique key,
            # so Postgres reports the primary key's conflict (23505) once the other one commits. Sent
            # again, the key sees that row and the insert does nothing.
            if getattr(e, "code", None) != "23505" or not self.table_shape().derived_ids:
                raise
            self._upsert(rows, on_conflict=ON_CONFLICT)

    def _not_stored_earlier(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`rows` less the samples whose round already holds them under another id (rows an earlier
        version of this image stored with random ids). Not what makes the write idempotent (the
        derived id does, also while this read races a concurrent insert): a guard for old rows."""
        rounds = {(r["job_id"], r["step"]) for r in rows}
        stored: set[tuple[Any, Any, Any]] = set()
        for job_id, step in rounds:
            query = self._client.table(TABLE).select("sample_index").eq("job_id", job_id).eq("step", step)
            stored |= {(job_id, step, r["sample_index"]) for r in self._execute(query)}
        return [r for r in rows if (r["job_id"], r["step"], r["sample_index"]) not in stored]

    def _insert_missing(self, rows: list[dict[str, Any]]) -> None:
        """A table without the unique key nor a uuid `id` (none the platform made): per (job_id,
        step), read the stored sample indexes, insert the rest. A retry whose first try commits
        after this read stores a row twice: the startup report says so and names `migrate`."""
        by_round: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_round[(row["job_id"], row["step"])].append(row)
        for (job_id, step), batch in by_round.items():
            query = self._client.table(TABLE).select("sample_index").eq("job_id", job_id).eq("step", step)
            stored = {r["sample_index"] for r in self._execute(query)}
            # One row per key even if the batch repeats one (the first, as an upsert would keep).
            fresh: dict[Any, dict[str, Any]] = {}
            for row in batch:
                if row["sample_index"] not in stored:
                    fresh.setdefault(row["sample_index"], row)
            if fresh:
                self._execute(self._client.table(TABLE).insert(list(fresh.values()), returning=ReturnMethod.minimal))

    def _upsert(self, rows: list[dict[str, Any]], *, on_conflict: str) -> None:
        if not rows:
            return
        query = self._client.table(TABLE).upsert(
            rows,
            on_conflict=on_conflict,
            ignore_duplicates=True,  # first write wins: a replay never overwrites or doubles
            returning=ReturnMethod.minimal,  # nothing to read back; saves the response body
        )
        self._execute(query)

    def _check_table(self) -> None:
        self._execute(self._client.table(TABLE).select("id").limit(0))  # reads no row

    def _delete_probe(self) -> None:
        query = self._client.table(TABLE).delete(returning=ReturnMethod.minimal)
        self._execute(query.eq("job_id", PROBE_JOB_ID).eq("step", PROBE_STEP))

    def _execute(self, query: Any) -> list[dict[str, Any]]:
        """Run one request and return its rows; any failure becomes a Transient- or PermanentWriteError."""
        self._status.value = None
        if self._cancelled.is_set():
            raise TransientWriteError(f"{TABLE}: the write was cancelled (the writer is closing)")
        try:
            return query.execute().data or []
        except TRANSIENT_HTTPX as e:
            raise TransientWriteError(hide(f"{TABLE}: {type(e).__name__}: {e}", self._key)) from None
        except httpx.HTTPError as e:
            raise PermanentWriteError(hide(f"{TABLE}: {type(e).__name__}: {e}", self._key)) from None
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
                hide(f"{TABLE}: {said}", self._key)
            )
        else:
            err = PermanentWriteError(hide(f"{fix_for(status, e.code, server)} [{said}]", self._key))
        err.code, err.status = e.code, status  # type: ignore[attr-defined]
        return err

    def _with_retries(self, send: Any, *, what: str) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientWriteError),
            wait=self.wait,
            stop=stop_after_attempt(self.max_attempts) | stop_when_event_set(self._cancelled),
            sleep=self._cancelled.wait,  # cancel() ends a wait between attempts
            reraise=True,
        )
        try:
            retrying(send)
        except TransientWriteError as e:
            raise TransientWriteError(
                f"supabase: {what} not written after {self.max_attempts} attempts: {e}"
            ) from e

    @staticmethod
    def _probe_row() -> dict[str, Any]:
        """A full row (every column this image sends) under the reserved probe key."""
        return make_row(
            job_id=PROBE_JOB_ID,
            user_id=PROBE_JOB_ID,
            epoch=0.0,
            step=PROBE_STEP,
            sample=Sample(0, "preflight probe", "", "preflight", 0, "prediction_set", "preflight"),
            generation=Generation("", 0, 0, 0.0, "eos", 1, False, None, None),
            scores=Scores(),
        )
