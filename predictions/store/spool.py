"""The one reader of the JSONL files the image writes: the spool (OUTPUT_DIR/predictions.jsonl)
and the rounds log (OUTPUT_DIR/prediction_rounds.jsonl).

A process killed mid-write leaves a torn last line (the local writer appends whole rounds,
fsynced, so only the last line can be cut). A line that is not a JSON object is skipped and
counted; what is said about it is the caller's (replay and report word it their own way).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

from predictions.store.rows import ROW_COLUMNS, upgrade_row

log = logging.getLogger(__name__)


class JsonlObjects:
    """The JSON objects of a JSONL file, in order, as it is iterated (once). Blank lines are
    passed over; after the iteration `skipped` holds the numbers of the lines that were not JSON
    objects and `last` the file's last line number."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.skipped: list[int] = []
        self.last = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        # surrogatepass: the local writer writes lone surrogates that way; the writers sanitise them.
        with self.path.open(encoding="utf-8", errors="surrogatepass") as f:
            for self.last, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)  # NaN scores read back as float('nan'); sanitised later
                except json.JSONDecodeError:
                    self.skipped.append(self.last)
                    continue
                if isinstance(value, dict):
                    yield value
                else:
                    self.skipped.append(self.last)

    def torn(self, lineno: int) -> bool:
        """Whether skipped line `lineno` is the file's last (cut by a kill mid-write)."""
        return lineno == self.last


def read_spool(spool_path: Path, *, quiet: bool = False) -> Iterator[dict[str, Any]]:
    """The spool's rows in order, as the table takes them; a line that is not a JSON row is
    skipped with a log line (none when `quiet`).

    Rows of an earlier version are upgraded to today's types, and only the table's columns are
    kept: a key this version does not know would fail the insert.
    """
    lines = JsonlObjects(spool_path)
    for row in lines:
        row = upgrade_row(row)
        yield {key: row[key] for key in ROW_COLUMNS if key in row}
    if quiet:
        return
    for lineno in lines.skipped:
        if lines.torn(lineno):
            log.info(f"replay: skipped the torn last line {lineno} of {spool_path} (killed mid-write)")
        else:
            log.info(f"replay: skipped line {lineno} of {spool_path}: not a JSON row")
    if lines.skipped:
        log.info(f"replay: {len(lines.skipped)} line(s) of {spool_path} skipped")
