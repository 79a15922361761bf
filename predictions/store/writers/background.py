"""Database writes off the training thread.

The training loop hands a round's rows to `submit`, which only enqueues them; a daemon thread
calls the inner writer (whose own retries may take minutes while the database is away). Nothing
the database does can stop or slow training: a full queue, a failed round or a stuck writer is
counted, logged with its cause, and left in the local spool for `python entrypoint.py replay`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predictions.store.writers.base import PermanentWriteError, PredictionWriter, TransientWriteError

log = logging.getLogger(__name__)

_STOP = object()  # the worker's last queue item
MAX_ERRORS_KEPT = 50  # distinct messages in DeliveryStats.errors; bounded for a long job


@dataclass
class DeliveryStats:
    """What reached the database. rounds_submitted = written + failed + still pending."""

    rounds_submitted: int = 0
    rounds_written: int = 0
    rounds_failed: int = 0
    rows_written: int = 0
    rows_failed: int = 0
    rows_pending_at_close: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rows_not_delivered(self) -> int:
        """Rows that are only in the local spool."""
        return self.rows_failed + self.rows_pending_at_close


class BackgroundWriter:
    """Runs `inner.write` on a daemon thread behind a bounded queue of rounds."""

    def __init__(
        self,
        inner: PredictionWriter,
        *,
        max_pending_rounds: int = 64,
        drain_timeout_s: float = 120,
        spool_path: Path | str | None = None,
    ):
        assert max_pending_rounds > 0 and drain_timeout_s >= 0
        self.inner = inner
        self.name = inner.name
        self.drain_timeout_s = drain_timeout_s
        self.spool_path = spool_path
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending_rounds)
        self._lock = threading.Lock()  # the counters are updated by both threads
        self._stats = DeliveryStats()
        self._pending_rows = 0  # queued or being written
        self._logged: set[str] = set()
        self._closed: DeliveryStats | None = None
        self._abandoned = threading.Event()  # close gave up waiting: write nothing more
        self.still_writing = False  # after close: the worker outlived its cancel (see _cancel_inner)
        self._thread = threading.Thread(target=self._run, name=f"predictions-{self.name}-writer", daemon=True)
        self._thread.start()

    def submit(self, rows: list[dict[str, Any]]) -> None:
        """Queue one round for the database and return at once; never raises, never blocks."""
        rows = list(rows)
        with self._lock:
            self._stats.rounds_submitted += 1
            if self._closed is not None:
                self._fail(rows, "submitted after close", log_once=True)
                return
            try:
                self._queue.put_nowait(rows)
            except queue.Full:
                self._fail(
                    rows,
                    f"{self.name} writer is {self._queue.maxsize} rounds behind "
                    "(the database is slow or away); "
                    "rounds beyond that stay in the local spool",
                    log_once=True,
                )
                return
            self._pending_rows += len(rows)

    def close(self) -> DeliveryStats:
        """Wait up to drain_timeout_s for queued rounds, close the inner writer, report delivery."""
        with self._lock:
            if self._closed is not None:
                return self._closed
        deadline = time.monotonic() + self.drain_timeout_s
        try:
            self._queue.put(_STOP, timeout=self.drain_timeout_s)
        except queue.Full:
            stopped = False  # the queue stayed full for the whole timeout: the worker is stuck
        else:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            stopped = not self._thread.is_alive()
        if not stopped:
            self._abandoned.set()  # the worker writes nothing after it wakes up
            log.info(
                f"predictions: the {self.name} writer did not finish within {self.drain_timeout_s:g} s; "
                "giving up on the rounds still queued"
            )
            self._cancel_inner()
        self._close_inner()
        with self._lock:
            self._stats.rows_pending_at_close = self._pending_rows
            stats = DeliveryStats(**{**vars(self._stats), "errors": list(self._stats.errors)})
            self._closed = stats
        if stats.rows_not_delivered:
            command = "python entrypoint.py replay"
            if self.spool_path is not None:
                command += f" --spool {self.spool_path}"
            log.info(
                f"predictions: {stats.rows_not_delivered} rows were not delivered to {self.name} "
                f"({stats.rows_failed} failed, {stats.rows_pending_at_close} still pending); they are in the "
                f"local spool: run `{command}` to send them"
            )
        return stats

    # -- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._abandoned.is_set():
                return
            self._write(item)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        try:
            self.inner.write(rows)
        except TransientWriteError as e:
            message = f"{self.name}: a round of {len(rows)} rows was not written: {e}"
            self._finish(rows, message, log_once=False)
        except PermanentWriteError as e:
            self._finish(rows, f"{self.name}: a round of {len(rows)} rows was refused: {e}", log_once=True)
        except Exception as e:  # noqa: BLE001 - a bug in a writer must not kill the thread
            # An unexpected error would end this thread and every later round would pile up
            # unwritten; it is counted and logged like a failure, with its type, instead.
            self._finish(rows, f"{self.name}: writer error {type(e).__name__}: {e}", log_once=True)
        else:
            with self._lock:
                self._pending_rows -= len(rows)
                self._stats.rounds_written += 1
                self._stats.rows_written += len(rows)

    def _finish(self, rows: list[dict[str, Any]], message: str, *, log_once: bool) -> None:
        with self._lock:
            self._pending_rows -= len(rows)
            self._fail(rows, message, log_once=log_once)

    def _fail(self, rows: list[dict[str, Any]], message: str, *, log_once: bool) -> None:
        """Count a round not delivered and log why (the caller holds the lock)."""
        self._stats.rounds_failed += 1
        self._stats.rows_failed += len(rows)
        first = message not in self._logged
        if first and len(self._stats.errors) < MAX_ERRORS_KEPT:
            self._stats.errors.append(message)
        self._logged.add(message)
        # After close gave up, the round in flight was already reported as pending: no new line.
        if (first or not log_once) and not self._abandoned.is_set():
            log.info(f"predictions: {message}")

    def _cancel_inner(self) -> None:
        """Stop the write in flight and wait for the thread to end (the inner writer's bound), so
        that nothing of this writer still writes while a catch-up replay does. A thread that
        outlives the bound is said (`still_writing`) and the caller leaves the catch-up to `replay`."""
        cancel = getattr(self.inner, "cancel", None)
        if cancel is not None:
            try:
                cancel()
            except Exception as e:  # noqa: BLE001 - a failed cancel must not lose the stats
                log.info(f"predictions: cancelling the {self.name} writer failed: {type(e).__name__}: {e}")
            self._thread.join(timeout=float(getattr(self.inner, "cancel_bound_s", 30)))
        self.still_writing = self._thread.is_alive()
        if self.still_writing:
            log.info(f"predictions: the {self.name} writer is still in a request after being cancelled")

    def _close_inner(self) -> None:
        try:
            self.inner.close()
        except Exception as e:  # noqa: BLE001 - closing must still return the stats
            log.info(f"predictions: closing the {self.name} writer failed: {type(e).__name__}: {e}")
            with self._lock:
                self._stats.errors.append(f"close: {type(e).__name__}: {e}")
