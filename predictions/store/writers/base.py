"""The writer interface and its failures.

Every writer takes one round's rows at a time. Retry rules depend on the exception's type, never
on message text: a TransientWriteError may succeed if tried again (network, 5xx, connection
lost); a PermanentWriteError will not (bad key, RLS, constraint, malformed request) and its
message says what to fix.
"""

from __future__ import annotations

from typing import Any, Protocol


class WriteError(Exception):
    """A round's rows could not be written."""


class TransientWriteError(WriteError):
    """Worth retrying: the database or the network may come back."""


class PermanentWriteError(WriteError):
    """Not worth retrying: the message names what to fix."""


class PredictionWriter(Protocol):
    """Stores prediction rows (dicts keyed by predictions.store.rows.ROW_COLUMNS).

    `write` stores one batch and must be idempotent: writing the same (job_id, step,
    sample_index) twice leaves one row. It raises TransientWriteError or PermanentWriteError.
    `close` flushes and releases resources; it is called once, at the end of training.

    A database writer also has `cancel()`, callable from another thread: no new attempt starts, a
    retry's wait ends, the request in flight is cut short where the client can (Postgres cancels
    the query), and `write` then raises TransientWriteError within `cancel_bound_s` seconds. The
    background writer uses it so that no write is left running while a catch-up replay writes.
    """

    name: str

    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...
