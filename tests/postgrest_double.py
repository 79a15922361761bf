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
- GET …?select=…&job_id=eq.J&step=eq.S — the matching rows; DELETE with eq filters.

`after_insert` may raise an exception once the rows are stored (a response lost to a timeout).
The double answers httpx requests (an httpx.MockTransport handler); `serve()` puts it (or a
handler wrapping it) behind a real HTTP server, where a raised LostResponse drops the connection.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from typing import Any, Callable
from urllib.parse import parse_qs

import httpx

from predictions.store.rows import PLATFORM_COLUMNS
from tests.http_servers import LoopbackServer

NOT_NULL = {"job_id", "user_id", "epoch", "step", "sample_index", "prompt", "prediction"}
KEY = ("job_id", "step", "sample_index")


def openapi(columns: dict[str, str]) -> dict:
    """PostgREST's OpenAPI description of a training_predictions with `columns`."""
    kinds = {"integer": "integer", "double precision": "number", "boolean": "boolean"}
    props = {c: {"format": t, "type": kinds.get(t, "string")} for c, t in columns.items()}
    props["id"] = {"format": "uuid", "type": "string", "description": "Note:\nThis is a Primary Key.<pk/>"}
    props["created_at"] = {"format": "timestamp with time zone", "type": "string"}
    return {"swagger": "2.0", "definitions": {"training_predictions": {"type": "object", "properties": props}}}


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


class PostgrestDouble:
    """PostgREST over one table; call it with an httpx.Request (an httpx.MockTransport handler)."""

    def __init__(self, columns: dict[str, str] | None = None, *, unique_key: bool = False,
                 describe: bool = True, after_insert: Callable[[], None] | None = None):
        self.columns = dict(PLATFORM_COLUMNS if columns is None else columns)  # the platform's, by default
        self.unique_key, self.describe, self.after_insert = unique_key, describe, after_insert
        self.rows: list[dict[str, Any]] = []
        self.log: list[str] = []  # "METHOD code" of every request: what the writer was told

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self._answer(request)
        body = response.json() if response.content else None
        code = body.get("code") if isinstance(body, dict) else None
        self.log.append(f"{request.method} {request.url.path} {code or response.status_code}")
        return response

    def _answer(self, request: httpx.Request) -> httpx.Response:
        query = {k: v[0] for k, v in parse_qs(request.url.query.decode()).items()}
        if request.url.path == "/rest/v1/":
            return httpx.Response(200, json=openapi(self.columns)) if self.describe else httpx.Response(404)
        assert request.url.path == "/rest/v1/training_predictions", request.url
        assert request.headers["apikey"].startswith("sb_secret_")
        if request.method == "GET":
            return httpx.Response(200, json=[self._select(r, query.get("select", "*")) for r in self._matching(query)])
        if request.method == "DELETE":
            doomed = self._matching(query)
            self.rows = [r for r in self.rows if r not in doomed]
            return httpx.Response(204)
        assert request.method == "POST"
        return self._insert(json.loads(request.content), query, request.headers.get("prefer", ""))

    def _matching(self, query: dict[str, str]) -> list[dict[str, Any]]:
        filters = {k: v.removeprefix("eq.") for k, v in query.items() if v.startswith("eq.")}
        return [r for r in self.rows if all(str(r.get(k)) == v for k, v in filters.items())]

    @staticmethod
    def _select(row: dict[str, Any], select: str) -> dict[str, Any]:
        return dict(row) if select == "*" else {c: row.get(c) for c in select.split(",")}

    def _insert(self, body: Any, query: dict[str, str], prefer: str) -> httpx.Response:
        rows = body if isinstance(body, list) else [body]
        named = [c.strip('"') for c in query.get("columns", "").split(",") if c]
        for name in named + [k for r in rows for k in r]:
            if name not in self.columns:
                return _error(400, "PGRST204", f"Could not find the '{name}' column of 'training_predictions' in the schema cache")
        if "on_conflict" in query and not self.unique_key:
            return _error(400, "42P10", "there is no unique or exclusion constraint matching the ON CONFLICT specification")
        for row in rows:
            for column, value in row.items():
                if not _fits(value, self.columns[column]):
                    return _error(400, "22P02", f'invalid input syntax for type {self.columns[column]}: "{json.dumps(value)}"')
            for column in NOT_NULL & set(self.columns):
                if row.get(column) is None:
                    return _error(400, "23502", f'null value in column "{column}" of relation "training_predictions" '
                                                "violates not-null constraint")
        stored = {tuple(r[k] for k in KEY) for r in self.rows}
        for row in rows:
            key = tuple(row.get(k) for k in KEY)
            if "on_conflict" in query and key in stored:
                if "ignore-duplicates" in prefer:
                    continue
                return _error(409, "23505", "duplicate key value violates unique constraint")
            self.rows.append({**{c: None for c in self.columns}, **row, "id": str(uuid.uuid4())})
            stored.add(key)
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


def serve(handler: Callable[[httpx.Request], httpx.Response]) -> LoopbackServer:
    """`handler` (a PostgrestDouble, or a handler wrapping one) behind a real HTTP server on a free
    loopback port, one request at a time; close() stops it."""
    lock = threading.Lock()

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

        do_GET = do_POST = do_DELETE = _any

        def log_message(self, *args) -> None:  # quiet: the tests assert on the table, not on this log
            return

    return LoopbackServer(Handler)
