"""Process supervision (trainer/pod/supervise.py), as a pod meets it: a stop with several training
processes, a training process killed, an entrypoint killed outright, a second entrypoint on the same
OUTPUT_DIR. Part of the fault suite: each case counts in its totals (tests/faults.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e import QUICK_TRAINING, ROOT, wait_for
from tests.faults import Ended, judge, run
from tests.procs import alive, descendants, processes_with
from tests.test_faults import env_for, platform
from trainer.checkpoints import MARKER
from trainer.config.exits import EXIT_BUSY
from trainer.pod.supervise import hold_output_dir

pytestmark = pytest.mark.faults

#: Trains until stopped; a checkpoint every 5 steps, so that a stop always has one to resume from.
ENDLESS = {**QUICK_TRAINING, "max_steps": 100000, "save_steps": 5, "save_total_limit": 2, "logging_steps": 5}


def start(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env, stdout=f,
                                stderr=subprocess.STDOUT)


def checkpoints(out: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in out.glob(f"checkpoint-*/{MARKER}"))


def ended(proc: subprocess.Popen, log: Path, timeout: float = 180) -> Ended:
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *descendants(proc.pid)]:
            os.kill(pid, signal.SIGKILL)
        code = None
    return Ended(code, log.read_text())


@pytest.mark.slow
def test_two_training_processes_stopped_then_restarted_resume_and_a_killed_one_is_named(tmp_path):
    """SIGTERM with two training processes: 143, the job still running on the volume, no
    job_failed. The restart resumes from the checkpoint; then one of its training processes is
    SIGKILLed (the out-of-memory killer): 137, and the kill, not the surviving rank's "connection
    reset by peer", is the job's error and job_failed's."""
    out, log = tmp_path / "out", tmp_path / "log"
    env = env_for(tmp_path, NUM_PROCESSES="2", TRAINING_CONFIG=ENDLESS, PREDICTIONS_CONFIG={"enabled": False})
    sent = len(platform().alerts)
    proc = start(env, log)
    assert wait_for(lambda: checkpoints(out), timeout=300, interval=0.2), log.read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    judge(ended(proc, log), code=128 + signal.SIGTERM, says=["got SIGTERM", "a restart resumes"], handled=True)
    state = json.loads((out / "job_state.json").read_text())
    assert state["status"] == "running" and not state.get("exit_code")
    assert [a["type"] for a in platform().alerts[sent:]] == ["job_started"]

    proc = start(env, log)
    assert wait_for(lambda: "resume: from checkpoint-" in log.read_text(), timeout=300, interval=0.2), log.read_text()
    launcher = [pid for pid in descendants(proc.pid) if b"trainer.pod.supervise" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    rank1 = [pid for pid in descendants(launcher[0]) if pid in processes_with("LOCAL_RANK=1")]
    os.kill(rank1[0], signal.SIGKILL)
    done = ended(proc, log)
    assert done.code == 137, done.output[-4000:]
    error = json.loads((out / "job_state.json").read_text())["error"]
    assert error.startswith(f"training process rank 1 (pid {rank1[0]}) was killed (SIGKILL)"), error
    failed = [a for a in platform().alerts[sent:] if a["type"] == "job_failed"]
    assert len(failed) == 1 and failed[0]["error_message"] == error
    assert "job failed (exit 137)" in done.output


@pytest.mark.slow
def test_training_processes_do_not_outlive_a_sigkilled_entrypoint(tmp_path):
    """Outside a container nothing reaps them: they stop with their launcher, which stops with
    the entrypoint (PR_SET_PDEATHSIG), instead of training on, holding the GPU and the volume.
    Killed as soon as the training process exists, while it may still be starting."""
    out, log = tmp_path / "out", tmp_path / "log"
    proc = start(env_for(tmp_path, TRAINING_CONFIG=ENDLESS, PREDICTIONS_CONFIG={"enabled": False}), log)
    assert wait_for(lambda: len(descendants(proc.pid)) >= 2, timeout=300, interval=0.1), log.read_text()[-3000:]
    training = descendants(proc.pid)
    proc.kill()  # the entrypoint alone: its process group lives on
    proc.wait()
    assert wait_for(lambda: not any(alive(pid) for pid in training), timeout=120), "a training process outlived it"
    assert json.loads((out / "job_state.json").read_text())["status"] == "running"  # a restart resumes
    assert not processes_with(str(out))


def test_a_second_entrypoint_on_the_same_output_dir_is_refused_without_touching_it(tmp_path):
    out = tmp_path / "out"
    sent = len(platform().alerts)
    lock = hold_output_dir(out)  # this test process plays the first entrypoint
    (out / "job_state.json").write_text('{"job_id": "job_faults", "status": "running"}\n')
    try:
        ended = run(env_for(tmp_path, TRAINING_CONFIG=ENDLESS), timeout=120)
    finally:
        os.close(lock)
    judge(ended, code=EXIT_BUSY, says=["is in use by another entrypoint", f"pid {os.getpid()}", "OUTPUT_DIR"])
    assert "launch:" not in ended.output and len(platform().alerts) == sent
    assert json.loads((out / "job_state.json").read_text()) == {"job_id": "job_faults", "status": "running"}


@pytest.mark.slow
def test_ctrl_c_stops_a_run_like_sigterm_without_a_traceback(tmp_path):
    """A person's Ctrl-C (SIGINT to the entrypoint): 130, every process stopped, no traceback, the
    job still running on the volume (a restart resumes). Sent once the training process exists:
    the ranks get a SIGTERM (a SIGINT was a KeyboardInterrupt traceback in each)."""
    out, log = tmp_path / "out", tmp_path / "log"
    sent = len(platform().alerts)
    proc = start(env_for(tmp_path, TRAINING_CONFIG=ENDLESS, PREDICTIONS_CONFIG={"enabled": False}), log)
    assert wait_for(lambda: len(descendants(proc.pid)) >= 2, timeout=300, interval=0.1), log.read_text()[-3000:]
    training = descendants(proc.pid)
    proc.send_signal(signal.SIGINT)
    judge(ended(proc, log), code=128 + signal.SIGINT, says=["got SIGINT", "a restart resumes"], handled=True)
    assert wait_for(lambda: not any(alive(pid) for pid in training), timeout=60)
    assert json.loads((out / "job_state.json").read_text())["status"] == "running"
    assert "job_failed" not in [a["type"] for a in platform().alerts[sent:]]
