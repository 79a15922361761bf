"""A PostgREST stand-in that EXECUTES on a real PostgreSQL: what the server itself decides (the
conflict target, ON CONFLICT, types, constraints, privileges, transactions racing) is decided by
Postgres, not by the test. Written from PostgREST's documented behaviour (docs.postgrest.org:
"Tables and Views", "Upsert", "Prefer header", "Errors"), for the requests the image makes:

- GET /rest/v1/ — the OpenAPI description: definitions.training_predictions.properties, each
  column's `format` its type as the catalog formats it (format_type), the primary key noted;
- POST /rest/v1/training_predictions — a JSON array in one statement and one transaction:
  `insert into t (<columns>) select <columns> from json_populate_recordset(null::t, $body)`,
  `<columns>` the `columns` parameter or the first object's keys (a key the table has not: 400
  PGRST204); `Prefer: resolution=ignore-duplicates` adds `on conflict (<on_conflict>, default: the
  primary key) do nothing`, `merge-duplicates` `do update` (Postgres answers 42P10 for a target
  no unique index matches);
- GET / HEAD …?select=…&<col>=eq.V&order=a.asc,b.desc&limit=&offset= and DELETE …?<col>=eq.V;
- errors as PostgREST maps SQLSTATEs to HTTP statuses, body {code, message, details, hint}.

Each request runs on its own connection, as the role PostgREST would switch to for the key
(`set local role service_role`); requests run concurrently when served by `serve_concurrently`.
`before_commit(request)` runs inside a write's transaction after its statement: a test holds the
commit there (a request that commits after the client gave up on it).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import httpx
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Json

TABLE = "training_predictions"

#: PostgREST's SQLSTATE → HTTP status table ("Errors" in its docs); anything else is 400.
_BY_PREFIX = {"08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
              "39": 500, "3B": 500, "40": 500, "53": 503, "54": 413, "55": 500, "57": 500, "58": 500,
              "F0": 500, "HV": 500, "P0": 500, "XX": 500}
_BY_CODE = {"23503": 409, "23505": 409, "25006": 405, "P0001": 400, "42883": 404, "42P01": 404,
            "42P17": 500, "42501": 403}


def status_of(sqlstate: str) -> int:
    """The HTTP status PostgREST answers a Postgres error with."""
    return _BY_CODE.get(sqlstate) or _BY_PREFIX.get(sqlstate[:2]) or 400


def _error(status: int, code: str, message: str, details: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "details": details, "hint": None})


class PostgrestOnPostgres:
    """PostgREST in front of `db_url`'s public.training_predictions (an httpx handler)."""

    def __init__(self, db_url: str, *, role: str | None = "service_role",
                 before_commit: Callable[[httpx.Request], None] | None = None):
        self.db_url, self.role, self.before_commit = db_url, role, before_commit
        self.log: list[str] = []  # "METHOD path status" of every answered request

    def __call__(self, request: httpx.Request) -> httpx.Response:
        try:
            response = self._answer(request)
        except psycopg.Error as e:
            state = e.sqlstate or "08000"  # no SQLSTATE: the connection itself failed
            response = _error(status_of(state), state, e.diag.message_primary or str(e).strip(), e.diag.message_detail)
        self.log.append(f"{request.method} {request.url.path} {response.status_code}")
        return response

    def _columns(self, conn: psycopg.Connection) -> dict[str, str]:
        return dict(conn.execute(
            "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a"
            " where a.attrelid = to_regclass('public.training_predictions') and a.attnum > 0 and not a.attisdropped"
            " order by a.attnum").fetchall())

    def _answer(self, request: httpx.Request) -> httpx.Response:
        with psycopg.connect(self.db_url, autocommit=True) as conn, conn.transaction():
            if self.role:
                conn.execute(sql.SQL("set local role {}").format(sql.Identifier(self.role)))
            columns = self._columns(conn)
            if request.url.path == "/rest/v1/":
                props = {c: {"format": t} for c, t in columns.items()}
                if "id" in props:
                    props["id"]["description"] = "Note:\nThis is a Primary Key.<pk/>"
                return httpx.Response(200, json={"swagger": "2.0",
                                                 "definitions": {TABLE: {"properties": props}} if columns else {}})
            assert request.url.path == f"/rest/v1/{TABLE}", request.url
            if not columns:
                return _error(404, "PGRST205", f"Could not find the table 'public.{TABLE}' in the schema cache")
            query = {k: v for k, v in request.url.params.multi_items()}
            if request.method == "POST":
                response = self._insert(conn, columns, json.loads(request.content), query,
                                        request.headers.get("prefer", ""))
                if response.status_code < 300 and self.before_commit is not None:
                    self.before_commit(request)
                return response
            return self._read_or_delete(conn, columns, request.method, query)

    def _insert(self, conn: psycopg.Connection, columns: dict[str, str], body: Any, query: dict[str, str],
                prefer: str) -> httpx.Response:
        rows = body if isinstance(body, list) else [body]
        named = [c.strip('"') for c in query["columns"].split(",")] if "columns" in query else list(rows[0] if rows else [])
        for name in named:
            if name not in columns:
                return _error(400, "PGRST204", f"Could not find the '{name}' column of '{TABLE}' in the schema cache")
        cols = sql.SQL(", ").join(map(sql.Identifier, named))
        statement = sql.SQL("insert into public.{t} ({c}) select {c} from json_populate_recordset(null::public.{t}, %s)").format(
            t=sql.Identifier(TABLE), c=cols)
        if "resolution=" in prefer:
            target = query.get("on_conflict") or "id"  # the primary key by default
            statement += sql.SQL(" on conflict ({})").format(sql.SQL(", ").join(map(sql.Identifier, target.split(","))))
            if "ignore-duplicates" in prefer:
                statement += sql.SQL(" do nothing")
            else:
                statement += sql.SQL(" do update set {}").format(sql.SQL(", ").join(
                    sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in named))
        conn.execute(statement, (Json(rows),))
        return httpx.Response(201)

    def _read_or_delete(self, conn: psycopg.Connection, columns: dict[str, str], method: str,
                        query: dict[str, str]) -> httpx.Response:
        filters = {k: v.removeprefix("eq.") for k, v in query.items() if v.startswith("eq.")}
        select = [c for c in query.get("select", "*").split(",") if c != "*"]
        order = [t.partition(".") for t in query.get("order", "").split(",") if t]
        for name in [*filters, *select, *(c for c, _, _ in order)]:
            if name not in columns:
                return _error(400, "42703", f"column {TABLE}.{name} does not exist")
        where = sql.SQL(" and ").join(sql.SQL("{}::text = %s").format(sql.Identifier(c)) for c in filters) \
            if filters else sql.SQL("true")
        if method == "DELETE":
            conn.execute(sql.SQL("delete from public.{} where {}").format(sql.Identifier(TABLE), where), list(filters.values()))
            return httpx.Response(204)
        statement = sql.SQL("select {} from public.{} where {}").format(
            sql.SQL(", ").join(map(sql.Identifier, select)) if select else sql.SQL("*"), sql.Identifier(TABLE), where)
        if order:
            statement += sql.SQL(" order by {}").format(sql.SQL(", ").join(
                sql.SQL("{} desc nulls first" if how.startswith("desc") else "{} asc nulls last").format(sql.Identifier(c))
                for c, _, how in order))
        statement += sql.SQL(" limit {} offset {}").format(sql.Literal(int(query["limit"])) if "limit" in query
                                                          else sql.SQL("all"), sql.Literal(int(query.get("offset", 0))))
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(statement, list(filters.values())).fetchall()
        if method == "HEAD":
            return httpx.Response(200)
        return httpx.Response(200, content=json.dumps(rows, default=str).encode(),
                              headers={"content-type": "application/json"})
