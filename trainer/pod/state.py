"""The job's state on the volume: OUTPUT_DIR/job_state.json ({job_id, status: running | completed |
failed, exit_code, error, time, step, total_steps, loss, attempt}). It lets a restarted pod
recognise a job that already ended (trainer/pod/job.py): on RunPod a container that exits is
started again, a restart loop otherwise. Written atomically, each read-modify-write under a lock
(the parent, the launcher and every rank write it: unlocked, one's update would undo another's);
secrets scrubbed from errors."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainer.redact import scrub

log = logging.getLogger(__name__)

STATE_FILE = "job_state.json"
LOCK_FILE = ".job_state.lock"
#: A checkpoint is complete once trainer/checkpoints.py's MarkComplete wrote this file in it.
MARKER = "COMPLETE"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
MAX_ERROR_CHARS = 4000  # the platform stores error_message in the job row


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_state(output_dir: Path) -> dict | None:
    """OUTPUT_DIR/job_state.json, or None when there is none (or it is unreadable: then it says so)."""
    path = Path(output_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        log.info(f"job state: {path} is unreadable ({e}); treated as absent")
        return None
    return state if isinstance(state, dict) else None


@contextlib.contextmanager
def _locked(output_dir: Path):
    """The state's lock, held for one read-modify-write (released when its holder dies). Where
    it cannot be taken (OUTPUT_DIR not writable) the write below fails and says so."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(output_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # drops the lock


def write_state(output_dir: Path, *, replace: bool = False, **fields: Any) -> dict:
    """Merge `fields` into job_state.json (or replace it), atomically: a pod killed mid-write
    leaves the old file, never a torn one. An OUTPUT_DIR that cannot be written (the reason the
    pod is stopping, say) is logged: the state is lost, the alert that follows is still sent."""
    output_dir = Path(output_dir)
    with _locked(output_dir):
        return _write(output_dir, replace, fields)


def _write(output_dir: Path, replace: bool, fields: dict[str, Any]) -> dict:
    state = {} if replace else (read_state(output_dir) or {})
    state.update(fields, time=_now())
    try:
        tmp = output_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(tmp, output_dir / STATE_FILE)
    except OSError as e:
        log.info(f"job state: cannot write {output_dir / STATE_FILE} ({e.strerror or e}); not kept on the volume")
    return state


def record_failure(output_dir: Path, error: str) -> None:
    """A training process's error, for the parent's job_failed. The first error of an attempt
    wins: it is the cause; the other ranks' errors follow from it."""
    output_dir = Path(output_dir)
    with _locked(output_dir):
        if not (read_state(output_dir) or {}).get("error"):
            _write(output_dir, False, {"error": scrub(error)[-MAX_ERROR_CHARS:]})


def marker_job(path: Path) -> str | None:
    """The job a complete checkpoint's marker names; None for a marker of an older image (step only)."""
    lines = (path / MARKER).read_text(errors="replace").splitlines()
    return lines[1].strip() if len(lines) > 1 and lines[1].strip() else None


def newest_complete(output_dir: Path, job_id: str | None = None, *, quiet: bool = False) -> Path | None:
    """The newest complete checkpoint of job `job_id` under output_dir, or None (an empty volume
    starts fresh). A checkpoint whose marker names another job is never resumed; a torn one is
    skipped, said unless `quiet` (the parent looks first; the training process says it)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = sorted(
        ((int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()),
        reverse=True,
    )
    for _step, path in found:
        if (path / MARKER).exists():
            owner = marker_job(path)
            if job_id is None or owner is None or owner == job_id:
                return path
            if not quiet:
                log.info(f"resume: skipping {path.name}: job {owner!r}'s, not job {job_id!r}'s")
            continue
        if not quiet:
            log.info(f"resume: skipping {path.name}: incomplete (the pod stopped while it was being written)")
    return None
