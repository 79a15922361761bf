"""Wiring the storage mode to writers: migrations and preflight (parent, before launch), the
background writer (main training process), and the replay of a spool.

The mode comes from the config (trainer/config/load.py derives it from what is set); here it becomes
objects. Secrets are read from `cfg.secrets` at the last moment and handed to the client only.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from predictions.store.replay import replay_spool
from predictions.store.spool import read_spool
from predictions.store.writers.background import BackgroundWriter
from predictions.store.writers.base import PredictionWriter, WriteError
from trainer.config.environment import db_url_problem
from trainer.config.exits import EXIT_CONFIG, EXIT_MIGRATION, EXIT_NO_INPUT, EXIT_PREFLIGHT
from trainer.config.job import JobConfig

log = logging.getLogger(__name__)


class DatabaseRefused(Exception):
    """Preflight failed: the key, the table or the write permission. The message says the fix."""


class MigrationFailed(Exception):
    """A migration did not apply; the message names the file."""


def make_writer(cfg: JobConfig) -> PredictionWriter:
    """The database writer for the configured mode (not queued). Each mode imports its own client
    only (supabase-py or psycopg), here and for the migrations below: a local run loads neither."""
    p = cfg.predictions
    if cfg.storage == "supabase":
        from predictions.store.writers.supabase import SupabaseWriter

        return SupabaseWriter(
            cfg.supabase_url,
            cfg.secrets.supabase_service_key.get_secret_value(),
            timeout_s=p.write_timeout_s,
            max_request_bytes=p.max_request_bytes,
            max_text_chars=p.max_text_chars,
        )
    if cfg.storage == "postgres":
        from predictions.store.writers.postgres import PostgresWriter

        return PostgresWriter(cfg.secrets.supabase_db_url.get_secret_value(), max_text_chars=p.max_text_chars)
    raise ValueError(f"no database writer in {cfg.storage!r} mode")


def prepare_database(cfg: JobConfig, *, replay_previous: bool) -> None:
    """Migrations (when SUPABASE_DB_URL is set), preflight, and the previous attempt's spool."""
    if cfg.secrets.supabase_db_url is not None:
        from predictions.store.migrations import MigrationError, apply_migrations

        try:
            apply_migrations(cfg.secrets.supabase_db_url.get_secret_value())
        except MigrationError as e:
            raise MigrationFailed(str(e)) from None
    if cfg.storage == "local":
        return
    writer = make_writer(cfg)
    try:
        writer.preflight()
        who = "the service_role key may write" if cfg.storage == "supabase" else "the database user may write"
        log.info(f"preflight: ok — {cfg.storage}: {who}, the table training_predictions is reachable")
        for line in writer.report():  # what the live table lacks, and the one command that adds it
            log.info(line)
        spool = cfg.predictions_path
        if replay_previous and cfg.predictions.enabled and spool.exists() and spool.stat().st_size:
            sent = replay_spool(spool, writer)
            log.info(f"restart: replayed {sent} rows of the previous attempt's spool (duplicates ignored)")
    except WriteError as e:
        raise DatabaseRefused(str(e)) from None
    finally:
        writer.close()


def open_remote_writer(cfg: JobConfig):
    """A BackgroundWriter around the database writer, or None in local mode."""
    if cfg.storage == "local":
        return None
    return BackgroundWriter(
        make_writer(cfg), drain_timeout_s=cfg.predictions.drain_timeout_s, spool_path=cfg.predictions_path
    )


def finish_delivery(cfg: JobConfig, remote):
    """Drain the background writer; if rounds did not get through while the database was away,
    replay the spool once now (duplicates ignored), so a database that came back before the end
    holds every row. Returns the delivery stats and whether the catch-up completed."""
    stats = remote.close()
    if not stats.rows_not_delivered:
        return stats, None
    if remote.still_writing:  # two writers at once would be safe (row ids), but not a clean end
        log.info("predictions: no catch-up while the writer thread is still in a request; "
                 "the rows stay in the spool: run `python entrypoint.py replay`")
        return stats, False
    log.info(f"predictions: catching up — replaying {cfg.predictions_path.name} into {cfg.storage} "
             "(duplicates ignored)")
    writer = make_writer(cfg)
    try:
        sent = replay_spool(cfg.predictions_path, writer)
    except WriteError as e:
        log.info(f"predictions: catch-up failed ({e}); the rows stay in the spool: run `python entrypoint.py replay`")
        return stats, False
    finally:
        writer.close()
    log.info(f"predictions: catch-up done: {sent} spool rows checked into {cfg.storage}; every round is stored")
    return stats, True


def previously_written_steps(cfg: JobConfig, sample_count: int) -> set[int]:
    """Steps whose whole round is already in this job's spool (an earlier attempt of the pod):
    the callback skips them, so a restart never predicts a step twice."""
    spool = cfg.predictions_path
    if not spool.exists():
        return set()
    seen: dict[int, set[int]] = defaultdict(set)
    # A torn last line is skipped quietly: that round was not complete, so it runs again.
    for row in read_spool(spool, quiet=True):
        if row.get("job_id") == cfg.job_id:
            seen[row["step"]].add(row["sample_index"])
    done = {step for step, idx in seen.items() if len(idx) >= sample_count}
    if done:
        log.info(f"restart: {len(done)} rounds already in {spool.name} (steps {min(done)}–{max(done)}); not repeated")
    return done


def replay_command(cfg: JobConfig, spool: Path) -> int:
    """`entrypoint.py replay`: put a spool's rows into the database, exactly once."""
    if cfg.storage == "local":
        log.info("replay: no database configured (set SUPABASE_URL and SUPABASE_SERVICE_KEY, or SUPABASE_DB_URL)")
        return EXIT_CONFIG
    if not spool.exists():
        log.info(f"replay: {spool} does not exist")
        return EXIT_NO_INPUT
    writer = make_writer(cfg)
    try:
        writer.preflight()
        sent = replay_spool(spool, writer)
    except WriteError as e:
        log.info(f"replay: FAILED: {e}")
        return EXIT_PREFLIGHT
    finally:
        writer.close()
    log.info(f"replay: {sent} rows sent from {spool} (rows already stored were left as they were)")
    return 0


def migrate_command(db_url: str | None) -> int:
    """`entrypoint.py migrate`: apply sql/ to SUPABASE_DB_URL's database and nothing else (the
    platform's pods get no database URL: a person runs this once, from anywhere)."""
    if not db_url:
        log.info("migrate: set SUPABASE_DB_URL to the database's connection string "
                 "(Supabase: Project Settings → Database → Connection string)")
        return EXIT_CONFIG
    if db_url_problem(db_url):
        log.info(f"migrate: SUPABASE_DB_URL: {db_url_problem(db_url)}")
        return EXIT_CONFIG
    from predictions.store.migrations import MigrationError, apply_migrations

    try:
        apply_migrations(db_url)
    except MigrationError as e:
        log.info(f"migrations: FAILED: {e}")
        return EXIT_MIGRATION
    return 0
