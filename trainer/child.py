"""The training process's wrapper: an exception is recorded in the job's state for the parent's
job_failed (then raised: the traceback stays in the log); a full disk is said plainly, exit 74."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Callable

from trainer.config.exits import EXIT_DISK_FULL, EXIT_INTERRUPTED
from trainer.pod.cluster import mark_joined
from trainer.pod.state import record_failure
from trainer.pod.supervise import die_with_parent, output_dir_from_env

log = logging.getLogger(__name__)


class Stop(Exception):
    """A training process stops with `code` and a message that says it all (a model that cannot be
    fetched, say): logged and recorded for the parent's job_failed, without a traceback."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def describe_exception(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    if type(e).__name__ == "OutOfMemoryError":  # torch's; not imported here (the parent has no torch)
        return f"out of memory on the GPU: {text} (a smaller per_device_train_batch_size, gradient_checkpointing or LoRA helps)"
    return text


def child_main(main: Callable[[], int]) -> int:
    """Run a training process's main; an exception is recorded for the parent, then raised (the
    traceback stays in the log). A full disk is not a bug to debug: it is said plainly, without a
    traceback, and the process exits with EX_IOERR (74). The process ends with its launcher (a
    SIGKILLed entrypoint leaves no training process behind), and a Ctrl-C is a stop, not a bug."""
    die_with_parent()
    output_dir = output_dir_from_env()
    mark_joined(output_dir)  # torchrun starts this process only once every node joined
    try:
        return main()
    except KeyboardInterrupt:
        log.info("stopped (SIGINT)")
        return EXIT_INTERRUPTED
    except Stop as e:
        log.info(str(e))
        record_failure(output_dir, str(e))
        return e.code
    except Exception as e:
        if not _disk_full(e):
            record_failure(output_dir, describe_exception(e))
            raise
        message = disk_full_message(output_dir)
        log.info(message)
        record_failure(output_dir, message)
        return EXIT_DISK_FULL


def disk_full_message(output_dir: Path) -> str:
    """What a full disk means and what a restart does (trainer/pod/job.py resumes a job that
    stopped on a full disk: not the job's fault)."""
    return (f"disk full: no space left on the device of {output_dir}; free space or mount a larger volume at "
            f"OUTPUT_DIR. The predictions written so far are in {output_dir / 'predictions.jsonl'}; a restart "
            "resumes from the last complete checkpoint (the job is not marked as failed for good)")


def _disk_full(e: BaseException) -> bool:
    """ENOSPC, as an OSError or as a library's own error around it (safetensors raises a
    SafetensorError that says "No space left on device (os error 28)")."""
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)
