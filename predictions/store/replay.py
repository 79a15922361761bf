"""Replay a local spool into the database: the rows a database writer never delivered.

The spool (predictions/store/writers/local.py) holds every row of the job, delivered or not. Sending it
all again is safe: the writers upsert with duplicates ignored on (job_id, step, sample_index), so
a row already stored is left as it was and a replay run twice stores each row exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from predictions.store.rows import CONFLICT_KEY, ROW_COLUMNS, upgrade_row
from predictions.store.writers.base import PredictionWriter


def read_spool(spool_path: Path, log: Callable[[str], None]) -> Iterator[dict[str, Any]]:
    """The spool's rows in order; a line that is not a JSON row is skipped with a log line.

    A process killed mid-write leaves a torn last line (the local writer appends whole rounds,
    fsynced, so only the last line can be cut). A bad line elsewhere is logged as such.
    """
    bad: list[int] = []
    last_line = 0
    # surrogatepass: the local writer writes lone surrogates that way; the writer sanitises them.
    with spool_path.open(encoding="utf-8", errors="surrogatepass") as f:
        for last_line, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)  # NaN scores read back as float('nan'); sanitised later
            except json.JSONDecodeError:
                bad.append(last_line)
                continue
            if not isinstance(row, dict):
                bad.append(last_line)
                continue
            # Today's types (a spool of an earlier version), and only the table's columns: a key
            # this version does not know would fail the insert.
            row = upgrade_row(row)
            yield {key: row[key] for key in ROW_COLUMNS if key in row}
    for lineno in bad:
        if lineno == last_line:
            log(f"replay: skipped the torn last line {lineno} of {spool_path} (killed mid-write)")
        else:
            log(f"replay: skipped line {lineno} of {spool_path}: not a JSON row")
    if bad:
        log(f"replay: {len(bad)} line(s) of {spool_path} skipped")


def replay_spool(
    spool_path: Path,
    writer: PredictionWriter,
    *,
    batch_rows: int = 500,
    log: Callable[[str], None] = print,
) -> int:
    """Send every row of the JSONL spool through `writer` in batches; return the rows sent.

    Within a batch a key that repeats (a restarted job may have spooled a step twice) is sent
    once, the first one, as the database's ignore-duplicates would keep it. Raises the writer's
    TransientWriteError / PermanentWriteError; the rows before it were sent (and a rerun is safe).
    """
    assert batch_rows > 0
    sent = 0
    batch: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in read_spool(Path(spool_path), log):
        batch.setdefault(tuple(row.get(k) for k in CONFLICT_KEY), row)
        if len(batch) >= batch_rows:
            writer.write(list(batch.values()))
            sent += len(batch)
            batch = {}
    if batch:
        writer.write(list(batch.values()))
        sent += len(batch)
    return sent
