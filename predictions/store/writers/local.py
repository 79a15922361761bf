"""The local writer: one JSON line per prediction under OUTPUT_DIR, always on.

It is the spool of the database writers too: every row lands here first, flushed and fsynced each
round, so a row the database never received can be replayed later (`python entrypoint.py replay`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class LocalJsonlWriter:
    """Appends rows to a JSONL file; a restarted job appends to the same file."""

    name = "local"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[dict[str, Any]]) -> None:
        # allow_nan=False would fail a round on a NaN score; the sanitiser nulls NaN before the
        # database, and here json writes NaN, which Python's json reads back.
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        with self.path.open("a", encoding="utf-8", errors="surrogatepass") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())  # a round is on disk before the next one starts

    def close(self) -> None:
        """Nothing held open between rounds."""

