"""The image's output: Python's `logging`, one formatter, one handler on stdout.

Every module logs through `logging.getLogger(__name__)`; `setup()` is called once per process (the
entrypoint, each training process). A line is the message alone, flushed as it is written, as the
platform's log view and `docker logs` show it: `predictions: round 3 step 471 …`. Only the image's
own loggers (entrypoint, trainer, predictions) print at INFO; libraries keep their own handlers and
levels (httpx, for one, logs every request URL at INFO: a signed URL's signature must not reach the
log).
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(message)s"
#: The image's loggers: the entrypoint's and every module's under the two packages.
PROJECT_LOGGERS = ("entrypoint", "trainer", "predictions")


class StdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is when a line is logged (not when the handler was made), so a
    process that swaps stdout (a test capturing it) still gets every line; flushed per line."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup(level: int = logging.INFO) -> None:
    """One stdout handler with the image's formatter on the project's loggers. Idempotent."""
    formatter = logging.Formatter(FORMAT)
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, StdoutHandler) for h in logger.handlers):
            handler = StdoutHandler()
            handler.setFormatter(formatter)
            logger.addHandler(handler)
