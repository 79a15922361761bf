"""The launch: argv without secrets, the children's exit code, signals forwarded."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from tests.e2e import QUICK_TRAINING, ROOT, job_env, wait_for
from tests.env import set_job_env
from tests.procs import alive, descendants
from trainer.pod.launch import launch_command, strategy_refusal


def test_launch_command_cpu_and_multi_process():
    cmd, extra = launch_command(1, "no", "cpu")
    assert "--cpu" in cmd and "--multi_gpu" not in cmd and extra == {}
    cmd, extra = launch_command(2, "no", "cpu")
    assert "--multi_gpu" in cmd and extra == {"ACCELERATE_USE_CPU": "true"}
    cmd, extra = launch_command(4, "bf16", "cuda")
    assert cmd[cmd.index("--mixed_precision") + 1] == "bf16" and extra == {}
    assert cmd[-2:] == ["-m", "trainer.train"]  # the configuration travels in the environment only


def test_fsdp_gets_fsdp2_defaults_and_is_refused_on_cpu_processes(monkeypatch):
    # not the job's variables but the launcher's: the FSDP defaults launch_command fills in
    set_job_env(monkeypatch, None, clear=("FSDP_VERSION", "FSDP_AUTO_WRAP_POLICY"))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT")  # the job's own choice is kept
    _, extra = launch_command(2, "bf16", "cuda")
    assert extra == {"FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP"}
    assert strategy_refusal("cuda") is None
    assert strategy_refusal("cpu").startswith("ACCELERATE_USE_FSDP: FSDP needs GPUs here")
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    assert strategy_refusal("cpu") is None and launch_command(2, "no", "cpu")[1] == {"ACCELERATE_USE_CPU": "true"}


@pytest.mark.slow
def test_sigterm_is_forwarded_and_the_pod_stops_cleanly(tmp_path):
    out = tmp_path / "out"
    env = job_env(out, TRAINING_CONFIG={**QUICK_TRAINING, "max_steps": 100000, "save_strategy": "no"},
                  PREDICTIONS_CONFIG={"enabled": False})
    proc = subprocess.Popen([sys.executable, "entrypoint.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("{'loss'"):  # training is under way
            break
    children = descendants(proc.pid)
    assert children
    proc.send_signal(signal.SIGTERM)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert "got SIGTERM; stopping the training processes" in rest
    assert wait_for(lambda: not any(alive(pid) for pid in children), timeout=30)
