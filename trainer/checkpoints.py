"""Checkpoints that survive a pod restart: a checkpoint is complete only once it is fully written.

The Trainer writes `checkpoint-N/` file by file; a pod killed in the middle leaves a torn one that
`resume_from_checkpoint` would crash on (or, worse, load half of). `MarkComplete` drops a marker
file after the Trainer has finished saving, naming the step and the job; `newest_complete` resumes
from the newest checkpoint that has it, for this job, and skips the others (another job's outputs
are moved aside before training starts: trainer/pod/volume.py; this is the last guard).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback

log = logging.getLogger(__name__)

MARKER = "COMPLETE"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class MarkComplete(TrainerCallback):
    """Writes checkpoint-N/COMPLETE ("N\njob\n") after the Trainer saved checkpoint-N (main process)."""

    def __init__(self, job_id: str = ""):
        self.job_id = job_id

    def on_save(self, args, state, control, **kwargs):
        # Every rank writes its own part (rng_state_<rank>.pth): wait until all are done.
        PartialState().wait_for_everyone()  # no-op with one process
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            marker = folder / MARKER
            with open(marker, "w") as f:
                f.write(f"{state.global_step}\n{self.job_id}\n")
                f.flush()
                os.fsync(f.fileno())


def marker_job(path: Path) -> str | None:
    """The job a complete checkpoint's marker names; None for a marker of an older image (step only)."""
    lines = (path / MARKER).read_text(errors="replace").splitlines()
    return lines[1].strip() if len(lines) > 1 and lines[1].strip() else None


def newest_complete(output_dir: Path, job_id: str | None = None) -> Path | None:
    """The newest complete checkpoint of job `job_id` under output_dir, or None (an empty volume
    starts fresh). A checkpoint whose marker names another job is never resumed."""
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
            log.info(f"resume: skipping {path.name}: job {owner!r}'s, not job {job_id!r}'s")
            continue
        log.info(f"resume: skipping {path.name}: incomplete (the pod stopped while it was being written)")
    return None
