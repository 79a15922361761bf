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
from pathlib import Path

from accelerate import PartialState
from transformers import TrainerCallback

# The marker and the search live with the job's state on the volume: the parent reads them too
# (to say what a restart resumes from) without importing transformers.
from trainer.pod.state import _CHECKPOINT, MARKER, marker_job, newest_complete

__all__ = ["MARKER", "MarkComplete", "marker_job", "newest_complete"]

log = logging.getLogger(__name__)


class MarkComplete(TrainerCallback):
    """Writes checkpoint-N/COMPLETE ("N\njob\n") after the Trainer saved checkpoint-N (the main
    process; on a cluster with `save_on_each_node`, each node's local main process, in its own
    OUTPUT_DIR)."""

    def __init__(self, job_id: str = ""):
        self.job_id = job_id

    def on_save(self, args, state, control, **kwargs):
        # Every rank writes its own part (rng_state_<rank>.pth): wait until all are done.
        PartialState().wait_for_everyone()  # no-op with one process
        if not (state.is_local_process_zero if args.save_on_each_node else state.is_world_process_zero):
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and not state.is_world_process_zero:
            save_node_copy(kwargs["model"], folder)
        if folder.is_dir():
            marker = folder / MARKER
            with open(marker, "w") as f:
                f.write(f"{state.global_step}\n{self.job_id}\n")
                f.flush()
                os.fsync(f.fileno())


def save_node_copy(model, folder: Path) -> None:
    """The model's weights in a checkpoint of a cluster's other node. The Trainer saves the rest of
    the checkpoint on each node (`save_on_each_node`), but transformers (5.23) `save_pretrained`
    writes only on global rank 0 whatever that says, and volumes are not shared: without this a
    node's checkpoint has no weights and its restart could not resume."""
    from accelerate.utils import extract_model_from_parallel
    from safetensors.torch import save_model

    bare = extract_model_from_parallel(model)
    if hasattr(bare, "peft_config"):  # peft writes on any rank: the adapter alone, as the Trainer would
        bare.save_pretrained(folder)
        return
    save_model(bare, str(folder / "model.safetensors"), metadata={"format": "pt"})  # tied weights once
    bare.config.save_pretrained(folder)


def complete_steps(output_dir: Path, job_id: str | None = None) -> list[int]:
    """The steps of job `job_id`'s complete checkpoints under output_dir, newest first."""
    newest = newest_complete(output_dir, job_id)
    if newest is None:
        return []
    return sorted((int(m.group(1)) for p in Path(output_dir).iterdir()
                   if (m := _CHECKPOINT.match(p.name)) and (p / MARKER).exists()
                   and (job_id is None or marker_job(p) in (None, job_id))), reverse=True)


def newest_common(output_dir: Path, job_id: str | None = None) -> Path | None:
    """The checkpoint every node resumes from: the newest step complete in every node's own
    OUTPUT_DIR (volumes are not shared between the pods of a cluster, and a node stopped while
    saving has one checkpoint fewer than the others). One node: `newest_complete`. A collective
    when several processes run: every rank calls it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return newest_complete(output_dir, job_id)
    mine = complete_steps(output_dir, job_id)
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    common = set(everyone[0]).intersection(*map(set, everyone[1:]))
    if not common:
        if any(everyone):
            log.info("resume: no checkpoint is complete on every node; starting from step 0")
        return None
    step = max(common)
    if mine and mine[0] != step:
        log.info(f"resume: from checkpoint-{step}, the newest complete on every node (this node has "
                 f"checkpoint-{mine[0]})")
    return Path(output_dir) / f"checkpoint-{step}"
