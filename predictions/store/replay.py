"""Replay a local spool into the database: the rows a database writer never delivered.

The spool (predictions/store/writers/local.py) holds every row of the job, delivered or not.
Sending it all again is safe: the writers upsert with duplicates ignored on (job_id, step,
sample_index), so a row already stored is left as it was and a replay run twice stores each row
exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from predictions.store.rows import CONFLICT_KEY
from predictions.store.spool import read_spool
from predictions.store.writers.base import PredictionWriter


def replay_spool(spool_path: Path, writer: PredictionWriter, *, batch_rows: int = 500) -> int:
    """Send every row of the JSONL spool through `writer` in batches; return the rows sent.

    Within a batch a key that repeats (a restarted job may have spooled a step twice) is sent
    once, the first one, as the database's ignore-duplicates would keep it. Raises the writer's
    TransientWriteError / PermanentWriteError; the rows before it were sent (and a rerun is safe).
    """
    assert batch_rows > 0
    sent = 0
    batch: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in read_spool(Path(spool_path)):
        batch.setdefault(tuple(row.get(k) for k in CONFLICT_KEY), row)
        if len(batch) >= batch_rows:
            writer.write(list(batch.values()))
            sent += len(batch)
            batch = {}
    if batch:
        writer.write(list(batch.values()))
        sent += len(batch)
    return sent
