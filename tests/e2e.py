"""Helpers for end-to-end tests that run the entrypoint as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.env import job_env as job_env  # the subprocess environment: callers import it from here too
from tests.procs import descendants

ROOT = Path(__file__).resolve().parents[1]

#: A short demo run: 200 steps take seconds on a CPU.
QUICK_TRAINING = {
    "max_steps": 40, "learning_rate": 2e-3, "per_device_train_batch_size": 16, "max_seq_length": 32,
    "save_strategy": "steps", "save_steps": 10, "save_total_limit": 5, "logging_steps": 10, "eval_strategy": "no",
}


def run_entrypoint(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the entrypoint to its end; past `timeout` (a hang) kill it and its training processes."""
    proc = subprocess.Popen([sys.executable, "entrypoint.py", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree_hard(proc)  # the training processes run in their own session: not killed with it
        stdout, stderr = proc.communicate()
        pytest.fail(f"the entrypoint did not finish within {timeout:g}s; its last output:\n{(stdout + stderr)[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def as_if_interrupted(output_dir: Path) -> None:
    """Make a finished run's job state look like a pod that died mid-run (state still running),
    so that the next start resumes instead of saying the job is complete."""
    from trainer.pod.state import write_state

    write_state(Path(output_dir), status="running", exit_code=None)


def spool_rows(output_dir: Path) -> list[dict]:
    """Every row of a finished run's spool; a line that does not parse fails the test (none is torn)."""
    path = Path(output_dir) / "predictions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def spool_rows_so_far(output_dir: Path) -> list[dict]:
    """The rows of a spool still being written: its complete lines only (the last one may be
    half-written at the moment it is read)."""
    path = Path(output_dir) / "predictions.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.strip()]


def kill_tree_hard(proc: subprocess.Popen) -> None:
    """SIGKILL the entrypoint and every process under it, as a dying pod would."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # already gone
    proc.wait(timeout=30)


def wait_for(predicate, timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
