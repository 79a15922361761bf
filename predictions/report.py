"""The closing summary: one table of rounds, and where every row went."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from predictions.metrics import summary_columns


def rounds_table(results) -> Table:
    """A table of rounds: step, epoch, samples, seconds and the mean scores of each."""
    table = Table(title="prediction rounds", title_justify="left")
    scores = [label for label, _ in summary_columns({})]  # one column per registered metric
    for name in ("round", "step", "epoch", "samples", "seconds", *scores, "status"):
        table.add_column(name, justify="right" if name != "status" else "left")
    for r in results:
        table.add_row(
            str(r.round), str(r.step), f"{r.epoch:.2f}", str(r.samples), f"{r.seconds:.1f}",
            *(cell for _, cell in summary_columns(r.means)),
            "ok" if r.ok else f"FAILED: {r.error}",
        )
    return table


def print_summary(results, stats=None, *, spool: Path, caught_up: bool | None = None,
                  console: Console | None = None) -> None:
    """Print the rounds table and the delivery outcome (local spool, database)."""
    console = console or Console(width=120, soft_wrap=True)
    console.print(rounds_table(results))
    failed = sum(not r.ok for r in results)
    rows = sum(r.samples for r in results)
    console.print(f"predictions: {len(results)} rounds ({failed} failed), {rows} rows in {spool}")
    if stats is not None:
        console.print(
            f"predictions: database: {stats.rows_written} rows written, {stats.rows_failed} failed, "
            f"{stats.rows_pending_at_close} still pending at the end"
            + {None: "", True: "; the catch-up replay stored the rest", False: "; run `python entrypoint.py replay`"}[caught_up]
        )
