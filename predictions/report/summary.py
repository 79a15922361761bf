"""The closing summary: one table of rounds, and where every row went."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

from predictions.metrics import summary_columns
from predictions.preference import preference_columns
from predictions.report.history import DEFAULT_THRESHOLD, build_history
from predictions.report.sources import SourceError, job_rows, read_rounds_log
from predictions.report.view import print_history, write_html
from predictions.store.spool import read_spool
from trainer.config.exits import EXIT_NO_INPUT, EXIT_UNAVAILABLE

log = logging.getLogger(__name__)


def rounds_table(results) -> Table:
    """A table of rounds: step, epoch, samples, seconds and the mean scores of each."""
    table = Table(title="prediction rounds", title_justify="left")
    scores = [label for label, _ in summary_columns({})]  # one column per registered metric
    # dpo / orpo rounds (predictions/preference.py): the mean reward margin and preference accuracy too.
    preference = [label for label, _ in preference_columns({})] if any(
        "preference_accuracy" in r.means for r in results) else []
    for name in ("round", "step", "epoch", "samples", "seconds", *scores, *preference, "status"):
        table.add_column(name, justify="right" if name != "status" else "left")
    for r in results:
        table.add_row(
            str(r.round), str(r.step), f"{r.epoch:.2f}", str(r.samples), f"{r.seconds:.1f}",
            *(cell for _, cell in summary_columns(r.means)),
            *(cell for _, cell in preference_columns(r.means) if preference),
            "ok" if r.ok else f"FAILED: {r.error}",
        )
    return table


def job_rows_in_spool(spool: Path, job_id: str) -> int:
    """Rows of `job_id` in the spool, from every attempt (a restarted pod's too)."""
    if not spool.exists():
        return 0
    return sum(row.get("job_id") == job_id for row in read_spool(spool, quiet=True))


def print_summary(results, stats=None, *, spool: Path, caught_up: bool | None = None,
                  console: Console | None = None, html: Path | None = None, job_id: str | None = None) -> None:
    """Print the rounds table, the delivery outcome (local spool, database) and where the full
    report is (`html`: the run's HTML report, when it was written). With `job_id`, the spool's
    count is the job's rows from every attempt, not only this one's."""
    console = console or Console(width=120, soft_wrap=True)
    console.print(rounds_table(results))
    failed = sum(not r.ok for r in results)
    rows = sum(r.samples for r in results)
    where = f"{rows} rows in {spool}"
    if job_id is not None:
        where = f"{rows} rows this attempt; {job_rows_in_spool(spool, job_id)} rows of job {job_id} in {spool}"
    console.print(f"predictions: {len(results)} rounds ({failed} failed), {where}")
    if stats is not None:
        console.print(
            f"predictions: database: {stats.rows_written} rows written, {stats.rows_failed} failed, "
            f"{stats.rows_pending_at_close} still pending at the end"
            + {None: "", True: "; the catch-up replay stored the rest", False: "; run `python entrypoint.py replay`"}[caught_up]
        )
    if html is not None:
        console.print(f"predictions: report in {html}")
    console.print("predictions: per-sample history and regressions: `python entrypoint.py report` "
                  "(--html FILE for the page; --from spool|database)")


# -- `entrypoint.py report` and the run's HTML report -------------------------------------------

def html_report_path(cfg) -> Path:
    """Where a run writes its HTML report: OUTPUT_DIR/predictions_report.html."""
    return cfg.output_dir / "predictions_report.html"


def load_job_history(cfg, job_id: str, *, source: str = "auto", threshold: float | None = None):
    """The job's History from the spool, or from the database in database mode (source "auto")."""
    if source == "auto":
        source = "spool" if cfg.storage == "local" else "database"
    rows = job_rows(cfg, job_id, source=source)
    label = f"{cfg.predictions_path}" if source == "spool" else f"{cfg.storage} table training_predictions"
    return build_history(rows, read_rounds_log(cfg), job_id=job_id, source=label,
                         threshold=DEFAULT_THRESHOLD if threshold is None else threshold)


def report_command(cfg, *, job_id: str | None, html: Path | None, source: str, threshold: float,
                   detail: int = 10, console: Console | None = None) -> int:
    """`entrypoint.py report`: the job's rounds and samples in the terminal, and the HTML file."""
    job = job_id or cfg.job_id
    try:
        history = load_job_history(cfg, job, source=source, threshold=threshold)
    except SourceError as e:
        log.info(f"report: cannot read the predictions: {e}")
        return EXIT_UNAVAILABLE
    if not history.rounds:
        log.info(f"report: no predictions for job {job} in {history.source}")
        return EXIT_NO_INPUT
    print_history(history, console, detail=detail)
    if html is not None:
        log.info(f"report: HTML written to {write_html(history, html)}")
    return 0


def write_run_report(cfg) -> Path | None:
    """At the end of a run (main process): the HTML report of its spool under OUTPUT_DIR.
    A failure to render is logged, never raised: the run's result does not depend on it."""
    try:
        history = load_job_history(cfg, cfg.job_id, source="spool")
        return write_html(history, html_report_path(cfg))
    except Exception as e:  # noqa: BLE001 — a report is a convenience; training already succeeded
        log.info(f"predictions: the HTML report could not be written ({type(e).__name__}: {e})")
        return None
