"""`accelerate launch` from the entrypoint: one training process per GPU, signals forwarded.

The children read their configuration from the environment they inherit: argv holds no secret
(it is visible to every user of the machine in /proc/*/cmdline and in `ps`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from trainer.config.job import JobConfig
from trainer.pod.cluster import Cluster, network_environment
from trainer.pod.supervise import SUPERVISOR_PID

log = logging.getLogger(__name__)

GRACE_S = 60  # after SIGTERM, how long the children get to stop before SIGKILL

#: What a job that sets ACCELERATE_USE_FSDP gets unless it says otherwise (the FSDP_* variables
#: accelerate's FSDP plugin reads). FSDP2: the model the Trainer's callbacks see is the sharded
#: module itself, which can generate in lockstep (predictions/rounds.py); under FSDP1 they see
#: the bare inner module with flattened shards. One FSDP unit per decoder layer
#: (`_no_split_modules`), and a full state dict gathered for the saved checkpoints and model.
FSDP_DEFAULTS = {
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
}


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def fsdp_enabled(environ=os.environ) -> bool:
    """Whether this job trains with accelerate's FSDP plugin (ACCELERATE_USE_FSDP)."""
    return _flag(environ.get("ACCELERATE_USE_FSDP"))


def process_count(cfg: JobConfig, cluster: Cluster | None = None) -> int:
    """Processes on this node: NUM_PROCESSES, else what the cluster says (NUM_TRAINERS,
    PET_NPROC_PER_NODE), else RUNPOD_GPU_COUNT, else one per visible GPU, else one."""
    if cfg.num_processes:
        return cfg.num_processes
    if cluster is not None and cluster.processes_per_node:
        return cluster.processes_per_node
    if cfg.env.RUNPOD_GPU_COUNT:
        return cfg.env.RUNPOD_GPU_COUNT
    return max(1, torch.cuda.device_count())


def device_kind() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def strategy_refusal(device: str, environ=os.environ) -> str | None:
    """Why this machine cannot run the sharded strategy the job asks for, or None.

    accelerate (1.15) turns ACCELERATE_USE_FSDP into FSDP only for accelerator processes (its
    MULTI_GPU family); several CPU processes (gloo) would train unsharded without a word, which
    is not what the job asked for. torch itself shards on CPUs (tests/test_rank_split.py runs
    FSDP2 generation on two gloo processes), but the Trainer goes through accelerate.
    """
    if fsdp_enabled(environ) and device == "cpu":
        return ("ACCELERATE_USE_FSDP: FSDP needs GPUs here: accelerate applies it only to GPU processes, and CPU "
                "processes would train unsharded. Unset it (CPU processes train with DDP, every rank generating its "
                "share of each prediction round) or run on GPUs")
    return None


def launch_command(processes: int, precision: str, device: str,
                   cluster: Cluster | None = None) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command line and the extra environment it needs. `processes`: on
    this node; a cluster of several nodes adds its machines, this node's rank, the primary's
    address and torchrun's static rendezvous (RunPod supports no other) with its timeout."""
    cluster = cluster or Cluster()
    nodes = cluster.nodes
    cmd = [
        # `accelerate launch`, keeping the training processes' own exit code and naming a killed one
        # (trainer/pod/supervise.py); its arguments are accelerate's.
        sys.executable, "-m", "trainer.pod.supervise",
        "--quiet",
        "--num_machines", str(nodes),
        # accelerate's --num_processes counts every node's (it gives torchrun num_processes // num_machines).
        "--num_processes", str(processes * nodes),
        "--mixed_precision", precision,
        "--dynamo_backend", "no",
    ]
    extra: dict[str, str] = {}
    if fsdp_enabled():
        extra.update({k: v for k, v in FSDP_DEFAULTS.items() if not os.environ.get(k)})
    if cluster.multi_node:
        cmd += [
            "--multi_gpu",
            "--machine_rank", str(cluster.node_rank),
            "--main_process_ip", str(cluster.primary_addr),
            "--main_process_port", str(cluster.primary_port),
            # Static: every node knows its rank and the primary's address; the primary's agent
            # hosts the store and waits `timeout` seconds for the others (then every node fails).
            "--rdzv_backend", "static",
            "--rdzv_conf", f"timeout={cluster.rendezvous_timeout_s}",
            # A failed node fails the job: no elastic restart (the static rendezvous cannot re-form).
            "--max_restarts", "0",
        ]
        extra.update(network_environment(cluster))
        if device == "cpu":
            extra["ACCELERATE_USE_CPU"] = "true"
    elif processes > 1:
        # `--cpu` alone starts a single process; several CPU processes need --multi_gpu with
        # ACCELERATE_USE_CPU, which makes accelerate use torchrun with the gloo backend.
        cmd += ["--multi_gpu", "--main_process_port", str(_free_port())]
        if device == "cpu":
            extra["ACCELERATE_USE_CPU"] = "true"
    elif device == "cpu":
        cmd += ["--cpu"]
    cmd += ["-m", "trainer.train"]
    return cmd, extra


def run_children(cmd: list[str], extra_env: dict[str, str]) -> int:
    """Run the launch in its own process group; on SIGTERM / SIGINT stop the whole group.
    Returns the children's exit code (128 + signal number when a signal ended them), and
    128 + the signal received when they were stopped: a stop is a stop whatever the children
    made of it (a rank whose peer went first fails with "Connection reset by peer")."""
    env = {**os.environ, **extra_env, SUPERVISOR_PID: str(os.getpid())}  # they stop if this process dies
    root = str(Path(__file__).resolve().parents[2])  # the checkout (or /app): trainer/pod/launch.py
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, _processes(cmd)))))
    child = subprocess.Popen(cmd, env=env, cwd=root, start_new_session=True)

    stopped: list[int] = []

    def forward(signum, _frame):
        log.info(f"entrypoint: got {signal.Signals(signum).name}; stopping the training processes")
        stopped.append(signum)
        try:
            # SIGTERM for both: a SIGINT would be a KeyboardInterrupt traceback in every rank.
            os.killpg(child.pid, signal.SIGTERM)
        except ProcessLookupError:
            return

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = child.wait()
        if code < 0:
            code = 128 - code
        return 128 + stopped[0] if stopped and code != 0 else code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _reap(child)


def _processes(cmd: list[str]) -> int:
    """The processes on this machine (accelerate's --num_processes counts every machine's)."""
    return int(cmd[cmd.index("--num_processes") + 1]) // int(cmd[cmd.index("--num_machines") + 1])


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _reap(child: subprocess.Popen) -> None:
    """Nothing of the group outlives the entrypoint: SIGTERM what is left (a rank that did not
    follow its launcher), SIGKILL it after the grace period."""
    if not _group_alive(child.pid):
        return
    with contextlib.suppress(ProcessLookupError):  # the group may end between the check and here
        os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE_S
    while _group_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(child.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
