"""predictions/store/writers/background.py: the database never blocks or breaks training."""

from __future__ import annotations

import threading

from predictions.store.writers.background import BackgroundWriter
from predictions.store.writers.base import PermanentWriteError, TransientWriteError

WAIT = 5  # seconds: an upper bound for a thread handoff, never an assertion about timing


class Inner:
    """A writer double: each write may wait on a gate, then fail from a script of errors."""

    name = "double"

    def __init__(self, *errors, gate: threading.Event | None = None):
        self.errors = list(errors)
        self.gate = gate
        self.started = threading.Event()
        self.rows: list[dict] = []
        self.closed = False
        self.cancelled = threading.Event()
        self.writing = 0  # writes in progress
        self.cancel_bound_s = WAIT

    def cancel(self):
        """As the real writers: the write in flight ends with a transient error."""
        self.cancelled.set()

    def write(self, rows):
        self.writing += 1
        try:
            self._write(rows)
        finally:
            self.writing -= 1

    def _write(self, rows):
        self.started.set()
        if self.gate is not None:
            while not (self.gate.is_set() or self.cancelled.is_set()):
                self.gate.wait(0.01)
        if self.cancelled.is_set():
            raise TransientWriteError("cancelled")
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        self.rows.extend(rows)

    def close(self):
        self.closed = True


def rnd(n: int, step: int = 0) -> list[dict]:
    return [{"step": step, "sample_index": i} for i in range(n)]



def lines(caplog) -> list[str]:
    """The writer's lines (caplog also holds other libraries' records)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("predictions")]

def test_submit_returns_while_the_inner_writer_is_slow():
    gate = threading.Event()
    inner = Inner(gate=gate)
    bw = BackgroundWriter(inner)
    bw.submit(rnd(3))  # returns although the write cannot finish until the gate opens
    assert inner.started.wait(WAIT)
    assert inner.rows == []
    gate.set()
    stats = bw.close()
    assert inner.rows == rnd(3) and inner.closed
    assert (stats.rounds_submitted, stats.rounds_written, stats.rows_written) == (1, 1, 3)
    assert stats.rows_failed == 0 and stats.rows_pending_at_close == 0


def test_failures_are_counted_and_logged_never_raised(caplog):
    key = PermanentWriteError("row-level security rejected the insert")
    inner = Inner(TransientWriteError("503 after 6 attempts"), key, PermanentWriteError(str(key)), None,
                  ValueError("a bug"))
    bw = BackgroundWriter(inner, spool_path="/out/predictions.jsonl")
    for step in range(5):
        bw.submit(rnd(2, step))
    stats = bw.close()
    assert (stats.rounds_written, stats.rounds_failed) == (1, 4)
    assert (stats.rows_written, stats.rows_failed) == (2, 8)
    assert sum("row-level security" in line for line in lines(caplog)) == 1  # a permanent cause, once
    assert any("503 after 6 attempts" in line for line in lines(caplog))
    assert any("ValueError: a bug" in line for line in lines(caplog))
    assert len(stats.errors) == 3
    assert "8 rows were not delivered" in lines(caplog)[-1]
    assert "python entrypoint.py replay --spool /out/predictions.jsonl" in lines(caplog)[-1]


def test_a_full_queue_is_counted_not_blocking(caplog):
    gate = threading.Event()
    inner = Inner(gate=gate)
    bw = BackgroundWriter(inner, max_pending_rounds=1)
    bw.submit(rnd(1, 0))
    assert inner.started.wait(WAIT)  # round 0 is in the writer; the queue is empty again
    bw.submit(rnd(1, 1))  # fills the queue
    bw.submit(rnd(4, 2))  # dropped
    bw.submit(rnd(4, 3))  # dropped
    assert sum("rounds behind" in line for line in lines(caplog)) == 1
    gate.set()
    stats = bw.close()
    assert (stats.rounds_submitted, stats.rounds_written, stats.rounds_failed) == (4, 2, 2)
    assert stats.rows_failed == 8
    assert "python entrypoint.py replay" in lines(caplog)[-1]


def test_close_drains_the_queue():
    gate = threading.Event()
    inner = Inner(gate=gate)
    bw = BackgroundWriter(inner)
    for step in range(10):
        bw.submit(rnd(2, step))
    gate.set()
    stats = bw.close()
    assert stats.rounds_written == 10 and len(inner.rows) == 20 and stats.rows_pending_at_close == 0


def test_close_on_a_stuck_writer_returns_and_reports_pending_rows(caplog):
    stuck = threading.Event()  # never set while close waits
    inner = Inner(gate=stuck)
    bw = BackgroundWriter(inner, drain_timeout_s=0.05)
    bw.submit(rnd(3, 0))
    assert inner.started.wait(WAIT)
    bw.submit(rnd(2, 1))
    stats = bw.close()
    assert stats.rows_not_delivered == 5 and stats.rounds_written == 0
    assert inner.closed
    assert "5 rows were not delivered" in lines(caplog)[-1]
    stuck.set()  # let the worker thread end


def test_close_leaves_no_write_running_and_the_thread_ended():
    """A catch-up replay runs right after close(): the worker must not still be in a write (its
    retry would reconnect and write alongside the replay)."""
    stuck = threading.Event()  # never set: only cancel() ends the write
    inner = Inner(gate=stuck)
    bw = BackgroundWriter(inner, drain_timeout_s=0.05)
    bw.submit(rnd(3, 0))
    assert inner.started.wait(WAIT)
    bw.submit(rnd(2, 1))
    stats = bw.close()
    assert inner.cancelled.is_set() and inner.writing == 0 and not bw._thread.is_alive()
    assert not bw.still_writing and inner.rows == [] and stats.rows_not_delivered == 5


def test_close_twice_and_submit_after_close():
    inner = Inner()
    bw = BackgroundWriter(inner)
    first = bw.close()
    assert bw.close() is first
    bw.submit(rnd(1))  # counted as not delivered, not raised
    assert inner.rows == []
