"""A double of PostgREST in front of one `training_predictions` table, written from PostgREST's
documented behaviour (no PostgREST server can be installed here). It validates what it receives
as PostgREST and Postgres would, and answers with their codes:

- GET /rest/v1/ — the OpenAPI description: definitions.training_predictions.properties, each
  column's `format` its Postgres type;
- POST /rest/v1/training_predictions — a JSON array inserted all or nothing: PGRST204 for a key
  (or `columns` entry) the table has not, 42P10 for `on_conflict` without a matching unique key,
  22P02 for a value its column's type cannot read (0.0 into integer, false into double
  precision, a non-UUID into uuid), 23502 for a NULL in a NOT NULL column;
  `Prefer: resolution=ignore-duplicates` with the key skips stored keys; a plain insert stores
  every row (a retried one twice, as the platform's table would);
- GET …?select=…&job_id=eq.J&step=eq.S&order=step.asc,…&offset=O&limit=L — the matching rows,
  ordered, that page of them (42703 for a column the table has not); HEAD the same without the
  body; DELETE with eq filters.

Options model the rest: `api_keys` (the gateway's 401), `exists` (a missing table), `script` (faults
in front of PostgREST), `require` (a check on what reads carry); see PostgrestDouble.
`after_insert` may raise an exception once the rows are stored (a response lost to a timeout).
Every request is kept in `requests` (headers and bodies), and "METHOD path code" in `log`.
The double answers httpx requests (an httpx.MockTransport handler); `serve()` puts it (or a
handler wrapping it) behind a real HTTP server, where a raised LostResponse drops the connection.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import uuid
from typing import Any, Callable, Collection, Mapping
from urllib.parse import parse_qs

import httpx

from predictions.store.rows import PLATFORM_COLUMNS
from tests.http_servers import LoopbackServer

TABLE = "training_predictions"
NOT_NULL = {"job_id", "user_id", "epoch", "step", "sample_index", "prompt", "prediction"}
KEY = ("job_id", "step", "sample_index")
SERVER_COLUMNS = ("id", "created_at")  # filled in by the table's defaults, described with the rest


def openapi(columns: dict[str, str]) -> dict:
    """PostgREST's OpenAPI description of a training_predictions with `columns`."""
    kinds = {"integer": "integer", "double precision": "number", "boolean": "boolean"}
    props = {c: {"format": t, "type": kinds.get(t, "string")} for c, t in columns.items()}
    props["id"] = {"format": "uuid", "type": "string", "description": "Note:\nThis is a Primary Key.<pk/>"}
    props["created_at"] = {"format": "timestamp with time zone", "type": "string"}
    return {"swagger": "2.0", "definitions": {TABLE: {"type": "object", "properties": props}}}


def _fits(value: Any, pg_type: str) -> bool:
    """Whether Postgres reads the JSON value into the column's type (json_populate_recordset)."""
    if value is None:
        return True
    if pg_type == "integer":
        return isinstance(value, int) and not isinstance(value, bool)  # 0.0 and "0.0" are refused
    if pg_type == "double precision":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if pg_type == "boolean":
        return isinstance(value, bool)
    if pg_type == "uuid":
        try:
            uuid.UUID(str(value))
            return True
        except ValueError:
            return False
    if pg_type == "jsonb":
        return True
    return isinstance(value, str)


def _error(status: int, code: str, message: str) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "details": None, "hint": None})


def _ordered(rows: list[dict[str, Any]], order: str) -> list[dict[str, Any]]:
    """`order=a.asc,b.desc`: Postgres's ORDER BY, NULLs last ascending and first descending."""
    for term in reversed(order.split(",")):  # stable sorts, the last key first
        column, _, how = term.partition(".")
        rows = sorted(rows, key=lambda r: (r.get(column) is None, r.get(column)), reverse=how.startswith("desc"))
    return rows


class PostgrestDouble:
    """PostgREST over one table; call it with an httpx.Request (an httpx.MockTransport handler).

    - `columns` (name → Postgres type; the platform's by default), `unique_key`: the table's shape;
      `describe=False`: a PostgREST with its OpenAPI output turned off (GET /rest/v1/ answers 404).
    - `api_keys`: the API keys Supabase's gateway in front of PostgREST accepts; a request with any
      other `apikey` is answered 401 {"message": "Invalid API key"}, as the gateway answers. None:
      any `sb_secret_` key, asserted on every request for the table.
    - `exists=False`: the relation is missing: the description lists no such table, and requests
      for it answer 404 PGRST205 "Could not find the table … in the schema cache" (PostgREST 12+;
      older versions passed Postgres's 42P01 through).
    - `script`: answers given, in order, to the next requests for the table before the model
      answers: faults in front of PostgREST (a gateway's 5xx, a dropped connection) and refusals
      this model does not make (RLS's 42501, a foreign key's 23503). Each is a status, a
      (status, JSON body) pair, or an exception to raise.
    - `require`: query parameters every read (GET or HEAD) of the table must carry once, with
      that value (None: any value), asserted — not PostgREST's behaviour but a check on the client
      (e.g. the owner's filters `user_id=eq.…`, the order, the page).
    """

    def __init__(self, columns: dict[str, str] | None = None, *, unique_key: bool = False,
                 describe: bool = True, exists: bool = True, api_keys: Collection[str] | None = None,
                 script: Collection[Any] = (), require: Mapping[str, str | None] | None = None,
                 after_insert: Callable[[], None] | None = None):
        self.columns = dict(PLATFORM_COLUMNS if columns is None else columns)  # the platform's, by default
        self.unique_key, self.describe, self.exists, self.after_insert = unique_key, describe, exists, after_insert
        self.api_keys = None if api_keys is None else set(api_keys)
        self.script, self.require = list(script), dict(require or {})
        self.rows: list[dict[str, Any]] = []
        self.requests: list[httpx.Request] = []  # every request, as sent (headers, body)
        self.log: list[str] = []  # "METHOD path code" of every answered request: what the writer was told

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self._answer(request)
        body = response.json() if response.content else None
        code = body.get("code") if isinstance(body, dict) else None
        self.log.append(f"{request.method} {request.url.path} {code or response.status_code}")
        return response

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if self.api_keys is not None and request.headers.get("apikey") not in self.api_keys:
            return httpx.Response(401, json={"message": "Invalid API key"})
        if request.url.path == "/rest/v1/":
            if not self.describe:
                return httpx.Response(404)
            described = openapi(self.columns) if self.exists else {"swagger": "2.0", "definitions": {}}
            return httpx.Response(200, json=described)
        assert request.url.path == f"/rest/v1/{TABLE}", request.url
        if self.api_keys is None:
            assert request.headers["apikey"].startswith("sb_secret_")
        if self.script:
            return self._scripted(self.script.pop(0))
        if not self.exists:
            return _error(404, "PGRST205", f"Could not find the table 'public.{TABLE}' in the schema cache")
        params = parse_qs(request.url.query.decode())
        query = {k: v[0] for k, v in params.items()}
        if request.method in ("GET", "HEAD"):
            for name, value in self.require.items():
                assert len(params.get(name, [])) == 1 and value in (None, query[name]), (name, params.get(name))
            return self._read(query, head=request.method == "HEAD")
        unknown = self._unknown(query)
        if unknown:
            return unknown
        if request.method == "DELETE":
            doomed = self._matching(query)
            self.rows = [r for r in self.rows if r not in doomed]
            return httpx.Response(204)
        assert request.method == "POST", request.method
        return self._insert(json.loads(request.content), query, request.headers.get("prefer", ""))

    @staticmethod
    def _scripted(step: Any) -> httpx.Response:
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, tuple):
            status, body = step
            return httpx.Response(status, json=body)
        return httpx.Response(step)

    def _unknown(self, query: dict[str, str]) -> httpx.Response | None:
        """42703 for a filter, order or select column the table has not."""
        named = [k for k, v in query.items() if v.startswith("eq.")]
        named += [t.partition(".")[0] for t in query.get("order", "").split(",") if t]
        named += [c for c in query.get("select", "*").split(",") if c != "*"]
        for name in named:
            if name not in self.columns and name not in SERVER_COLUMNS:
                return _error(400, "42703", f"column {TABLE}.{name} does not exist")
        return None

    def _read(self, query: dict[str, str], *, head: bool) -> httpx.Response:
        unknown = self._unknown(query)
        if unknown:
            return unknown
        rows = _ordered(self._matching(query), query["order"]) if "order" in query else self._matching(query)
        offset = int(query.get("offset", 0))
        rows = rows[offset:] if "limit" not in query else rows[offset:offset + int(query["limit"])]
        if head:
            return httpx.Response(200)
        return httpx.Response(200, json=[self._select(r, query.get("select", "*")) for r in rows])

    def _matching(self, query: dict[str, str]) -> list[dict[str, Any]]:
        filters = {k: v.removeprefix("eq.") for k, v in query.items() if v.startswith("eq.")}
        return [r for r in self.rows if all(str(r.get(k)) == v for k, v in filters.items())]

    @staticmethod
    def _select(row: dict[str, Any], select: str) -> dict[str, Any]:
        return dict(row) if select == "*" else {c: row.get(c) for c in select.split(",")}

    def _insert(self, body: Any, query: dict[str, str], prefer: str) -> httpx.Response:
        """PostgREST's `insert … on conflict (<on_conflict>) do nothing|update`: the target must be a
        unique key (the primary key `id`, or the key on (job_id, step, sample_index) when the table
        has it), else 42P10; a row whose `id` is stored already is a 23505 on the primary key
        unless that is the target and duplicates are ignored, as Postgres decides."""
        rows = body if isinstance(body, list) else [body]
        named = [c.strip('"') for c in query.get("columns", "").split(",") if c]
        for name in named + [k for r in rows for k in r]:
            if name not in self.columns and name not in SERVER_COLUMNS:
                return _error(400, "PGRST204", f"Could not find the '{name}' column of '{TABLE}' in the schema cache")
        target = query.get("on_conflict")
        if target not in (None, "id") and not (self.unique_key and target == ",".join(KEY)):
            return _error(400, "42P10", "there is no unique or exclusion constraint matching the ON CONFLICT specification")
        for row in rows:
            for column, value in row.items():
                if not _fits(value, self.columns.get(column, "uuid" if column == "id" else "text")):
                    return _error(400, "22P02", f'invalid input syntax for type {self.columns[column]}: "{json.dumps(value)}"')
            for column in NOT_NULL & set(self.columns):
                if row.get(column) is None:
                    return _error(400, "23502", f'null value in column "{column}" of relation "{TABLE}" '
                                                "violates not-null constraint")
        keys, ids = {tuple(r[k] for k in KEY) for r in self.rows}, {r["id"] for r in self.rows}
        ignore = "ignore-duplicates" in prefer
        for row in rows:
            key, row_id = tuple(row.get(k) for k in KEY), row.get("id")
            if target and (key if target != "id" else row_id) in (keys if target != "id" else ids) and ignore:
                continue
            if row_id in ids or (self.unique_key and key in keys):
                return _error(409, "23505", "duplicate key value violates unique constraint")
            self.rows.append({**{c: None for c in self.columns}, **row, "id": row_id or str(uuid.uuid4())})
            keys.add(key)
            ids.add(self.rows[-1]["id"])
        if self.after_insert is not None:
            self.after_insert()
        return httpx.Response(201)

    def serve(self) -> LoopbackServer:
        """This double behind a real HTTP server (see `serve`)."""
        return serve(self)


    def keys(self) -> list[tuple]:
        """(job_id, step, sample_index) of every stored row, sorted; a duplicate shows twice."""
        return sorted(tuple(r[k] for k in KEY) for r in self.rows)


class LostResponse(Exception):
    """Raised by a served handler after an insert landed: the server closes the connection unanswered."""


def serve(handler: Callable[[httpx.Request], httpx.Response], *, one_at_a_time: bool = True) -> LoopbackServer:
    """`handler` (a PostgrestDouble, or a handler wrapping one) behind a real HTTP server on a free
    loopback port; close() stops it. One request at a time (the in-memory double is not thread-safe),
    or, `one_at_a_time=False`, each on its own thread as PostgREST serves them (for a handler that
    is: tests/postgrest_pg.py's PostgrestOnPostgres, where Postgres settles the races)."""
    lock = threading.Lock() if one_at_a_time else contextlib.nullcontext()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _any(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            request = httpx.Request(self.command, f"http://double{self.path}", headers=dict(self.headers.items()),
                                    content=body)
            try:
                with lock:
                    response = handler(request)
            except LostResponse:
                self.close_connection = True  # the client sees the connection drop
                return
            self.send_response(response.status_code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_HEAD = do_POST = do_DELETE = _any  # HEAD: the answer's headers, its body empty

        def log_message(self, *args) -> None:  # quiet: the tests assert on the table, not on this log
            return

    return LoopbackServer(Handler)
