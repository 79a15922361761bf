"""Where a report's rows come from: the local spool, or the database as the job's owner sees it.

The database is read with the writer's credentials (the service key, or SUPABASE_DB_URL), but
filtered by job and by USER_ID: the rows RLS would give the owner, nothing of anyone else's.
Secrets are taken from `cfg.secrets` at the last moment and never printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from predictions.report.history import normalise, read_jsonl, spool_rows
from trainer.config.job import JobConfig
from trainer.redact import hide

TABLE = "training_predictions"
PAGE_ROWS = 1000  # PostgREST's usual max-rows: a bigger page would be cut silently


class SourceError(Exception):
    """The database could not be read; the message says why and never holds a secret."""


def rounds_log_path(cfg: JobConfig) -> Path:
    """OUTPUT_DIR/prediction_rounds.jsonl: one line per round attempt (absent in old outputs)."""
    return cfg.output_dir / "prediction_rounds.jsonl"


def read_rounds_log(cfg: JobConfig) -> list[dict[str, Any]]:
    return read_jsonl(rounds_log_path(cfg))


def postgres_rows(db_url: str, job_id: str, user_id: str | None) -> list[dict[str, Any]]:
    """The job's rows from Postgres (psycopg), in (step, sample_index) order, normalised."""
    import psycopg
    from psycopg.rows import dict_row

    query = f"select * from public.{TABLE} where job_id = %s"
    params: list[Any] = [job_id]
    if user_id is not None:
        query += " and user_id = %s"
        params.append(user_id)
    try:
        with psycopg.connect(db_url, connect_timeout=10, row_factory=dict_row) as conn:
            # A server-side cursor streams a big job instead of holding it twice in memory.
            with conn.cursor(name="report") as cur:
                cur.execute(query + " order by step, sample_index", params)
                return [normalise(_jsonable(r)) for r in cur]
    except psycopg.Error as e:
        raise SourceError(hide(f"Postgres: {type(e).__name__}: {e}".strip(), db_url)) from None


def supabase_rows(url: str, key: str, job_id: str, user_id: str | None, *, http_client=None,
                  columns: str = "*") -> list[dict[str, Any]]:
    """The job's rows (`columns` of them) through the Supabase REST API (supabase-py), PAGE_ROWS at a time."""
    import httpx
    from postgrest.exceptions import APIError
    from supabase import ClientOptions, create_client

    http = http_client or httpx.Client(timeout=httpx.Timeout(30), follow_redirects=True)
    client = create_client(url, key, options=ClientOptions(
        httpx_client=http, auto_refresh_token=False, persist_session=False))
    rows: list[dict[str, Any]] = []
    try:
        while True:
            query = client.table(TABLE).select(columns).eq("job_id", job_id)
            if user_id is not None:
                query = query.eq("user_id", user_id)
            page = query.order("step").order("sample_index").range(len(rows), len(rows) + PAGE_ROWS - 1).execute()
            rows += page.data
            if len(page.data) < PAGE_ROWS:
                break
    except APIError as e:
        raise SourceError(hide(f"Supabase: {e.code}: {e.message}", key)) from None
    except httpx.HTTPError as e:
        raise SourceError(hide(f"Supabase unreachable: {type(e).__name__}: {e}", key)) from None
    finally:
        if http_client is None:
            http.close()
    return [normalise(r) for r in rows]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Database values as the spool holds them (uuid and timestamps as text)."""
    out = {}
    for k, v in row.items():
        out[k] = v if v is None or isinstance(v, (str, int, float, bool, list, dict)) else str(v)
    return out


def job_rows(cfg: JobConfig, job_id: str, *, source: str) -> list[dict[str, Any]]:
    """The rows of `job_id` from "spool" or "database" (the configured database mode)."""
    if source == "spool":
        return spool_rows(cfg.predictions_path, job_id)
    if cfg.storage == "supabase":
        return supabase_rows(cfg.supabase_url, cfg.secrets.supabase_service_key.get_secret_value(), job_id, cfg.user_id)
    if cfg.storage == "postgres":
        return postgres_rows(cfg.secrets.supabase_db_url.get_secret_value(), job_id, cfg.user_id)
    raise SourceError("no database configured (local mode): the report reads the spool")
