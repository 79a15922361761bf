"""Checkpoints that survive a pod restart: a checkpoint is complete only once it is fully written.

The Trainer writes `checkpoint-N/` file by file; a pod killed in the middle leaves a torn one that
`resume_from_checkpoint` would crash on (or, worse, load half of). `MarkComplete` drops a marker
file after the Trainer has finished saving; `newest_complete` resumes from the newest checkpoint
that has it and skips the others.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback

# The marker and the search live with the job's state on the volume: the parent reads them too
# (to say what a restart resumes from) without importing transformers.
from trainer.pod.state import MARKER, newest_complete

__all__ = ["MARKER", "MarkComplete", "newest_complete"]

log = logging.getLogger(__name__)


class MarkComplete(TrainerCallback):
    """Writes checkpoint-N/COMPLETE after the Trainer saved checkpoint-N (main process)."""

    def on_save(self, args, state, control, **kwargs):
        # Every rank writes its own part (rng_state_<rank>.pth): wait until all are done.
        PartialState().wait_for_everyone()  # no-op with one process
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            marker = folder / MARKER
            with open(marker, "w") as f:
                f.write(f"{state.global_step}\n")
                f.flush()
                os.fsync(f.fileno())
