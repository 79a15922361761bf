"""The job owns its OUTPUT_DIR: another job's outputs on the volume are moved aside, never resumed,
replayed, reused or deleted.

A volume outlives its job: RunPod keeps `/workspace` when a template is reused, and a person may
point a second job at the first one's directory. Left in place, job B would resume A's newest
checkpoint (and, A having ended, train 0 steps and save A's weights as its model), replay A's
spool into B's table, train on A's download and let the Trainer's rotation delete A's
checkpoints. So before anything reads the volume, what is not this job's goes to
OUTPUT_DIR/previous/<time>-<job>/ (a rename: instant, nothing lost), and the report says so.

`FRESH_RUN=1` does the same to the job's own outputs, once: the state records that this job
started over on it, so a pod restarted with the variable still set (left in a template) resumes
the fresh run instead of starting over again on every restart. Unset it (one start without it)
and set it again to start over once more; `entrypoint.py run --fresh` always starts over.
"""

from __future__ import annotations

import logging
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from trainer.pod.state import LOCK_FILE as STATE_LOCK
from trainer.pod.state import read_state, write_state
from trainer.pod.supervise import LOCK_FILE

log = logging.getLogger(__name__)

ARCHIVE = "previous"
#: Not moved: the archive itself, and the locks (the entrypoint holds its own while it runs).
KEEP = (ARCHIVE, LOCK_FILE, STATE_LOCK)


def archive(output_dir: Path, owner: str | None) -> Path | None:
    """Move everything in output_dir (but the archive and the lock) to previous/<time>-<owner>/;
    the folder, or None when there was nothing to move."""
    entries = [e for e in output_dir.iterdir() if e.name not in KEEP] if output_dir.is_dir() else []
    if not entries:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", owner or "unknown-job")[:80]
    dest = output_dir / ARCHIVE / f"{stamp}-{label}"
    try:
        dest.mkdir(parents=True)
        for entry in entries:
            shutil.move(str(entry), str(dest / entry.name))  # a rename on the same volume
    except OSError as e:  # a read-only OUTPUT_DIR: the writability check refuses it next, by name
        log.info(f"volume: cannot move {output_dir}'s outputs aside ({e.strerror or e})")
    return dest


def claim(output_dir: Path, job_id: str, *, fresh: bool, fresh_env: bool) -> bool:
    """Make output_dir this job's before anything reads it. `fresh`: `run --fresh`; `fresh_env`:
    FRESH_RUN is set. Returns True when the job starts from zero (its own outputs moved aside)."""
    state = read_state(output_dir)
    owner = state.get("job_id") if state else None
    if state is not None and owner != job_id:
        dest = archive(output_dir, owner)
        log.info(f"volume: {output_dir} held job {owner!r}'s outputs (checkpoints, predictions, downloads), not job "
                 f"{job_id!r}'s: moved to {dest}, kept there; this job starts from zero")
        state = None
    if fresh or (fresh_env and not (state or {}).get("fresh_run")):
        dest = archive(output_dir, job_id)
        moved = f"its previous outputs (downloads included) were moved to {dest}" if dest else "nothing to move aside"
        log.info(f"fresh run ({'--fresh' if fresh else 'FRESH_RUN'}): training job {job_id} from zero; {moved}")
        if not fresh:
            log.info("fresh run: a restart with FRESH_RUN still set resumes this fresh run; to start over once more, "
                     "start once without FRESH_RUN, then set it again (or run `entrypoint.py run --fresh`)")
        write_state(output_dir, replace=True, job_id=job_id, status="running", fresh_run=fresh_env, attempt=0)
        return True
    if fresh_env:
        log.info(f"fresh run: FRESH_RUN is set, but job {job_id} already started over on it (the state says so): "
                 "not starting over again. To start over once more, start once without FRESH_RUN, then set it again")
    elif state and state.get("fresh_run"):
        write_state(output_dir, fresh_run=False)  # FRESH_RUN unset: the next FRESH_RUN=1 is a new request
    return False


#: The files the training process appends to (the spool and the rounds log).
APPENDED = ("predictions.jsonl", "prediction_rounds.jsonl")


def end_torn_lines(output_dir: Path) -> None:
    """A process killed mid-write leaves its file's last line torn (no newline). Ended here, before
    the training processes append again: the next row starts on a line of its own instead of
    being glued to the torn one (and lost with it); the torn line is skipped when read."""
    for name in APPENDED:
        path = Path(output_dir) / name
        try:
            with path.open("rb+") as f:
                if f.seek(0, 2) == 0:
                    continue
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    f.write(b"\n")
                    log.info(f"restart: the last line of {path} was torn (a kill mid-write); it stays, skipped when read")
        except FileNotFoundError:
            continue
