"""The closing summary: one table of rounds, and where every row went."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table


def rounds_table(results) -> Table:
    """A table of rounds: step, epoch, samples, seconds and the mean scores of each."""
    table = Table(title="prediction rounds", title_justify="left")
    for name in ("round", "step", "epoch", "samples", "seconds", "exact match", "char error", "word overlap", "status"):
        table.add_column(name, justify="right" if name != "status" else "left")
    for r in results:
        m = r.means
        table.add_row(
            str(r.round), str(r.step), f"{r.epoch:.2f}", str(r.samples), f"{r.seconds:.1f}",
            f"{m['exact_match']:.0%}" if "exact_match" in m else "-",
            f"{m['char_error_rate']:.3f}" if "char_error_rate" in m else "-",
            f"{m['word_overlap']:.3f}" if "word_overlap" in m else "-",
            "ok" if r.ok else f"FAILED: {r.error}",
        )
    return table


def job_rows_in_spool(spool: Path, job_id: str) -> int:
    """Rows of `job_id` in the spool, from every attempt (a restarted pod's too)."""
    from predictions.replay import read_spool

    if not spool.exists():
        return 0
    return sum(row.get("job_id") == job_id for row in read_spool(spool, log=lambda _line: None))


def print_summary(results, stats=None, *, spool: Path, caught_up: bool | None = None,
                  console: Console | None = None, job_id: str | None = None) -> None:
    """Print the rounds table and the delivery outcome (local spool, database). With `job_id`,
    the spool's count is the job's rows from every attempt, not only this one's."""
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
