"""Process supervision: the launcher that reports how its training processes ended, the tie that
stops them when the entrypoint dies, and the lock that keeps one entrypoint per OUTPUT_DIR.

    python -m trainer.pod.supervise <accelerate launch arguments>

is `accelerate launch` with the training processes' own outcome kept. accelerate turns any
failure into exit 1: its simple launcher exits 1 for a child's code, and under torchrun (several
processes) a SIGTERM is a `SignalException` traceback, a SIGKILLed rank a `ChildFailedError`
whose first lines are the surviving rank's "Connection reset by peer". Here a stop is 128 + the
signal, a killed process is named as killed (in the job's state, for job_failed), and any other
failure exits with the training process's own code (74 for a full disk, say).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from trainer.config.exits import EXIT_KILLED
from trainer.pod.state import write_state

log = logging.getLogger(__name__)

LOCK_FILE = ".entrypoint.lock"
#: The process that started this one (the entrypoint for the launcher, the launcher for a
#: training process): a process that finds another parent started after its own ended.
SUPERVISOR_PID = "TRAINER_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def output_dir_from_env() -> Path:
    """OUTPUT_DIR as trainer/config/load.py resolves it, for the processes that have no config."""
    return Path(os.environ.get("OUTPUT_DIR", "").strip() or os.environ.get("IMAGE_OUTPUT_DIR", "").strip()
                or "outputs")


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent ends (Linux's
    PR_SET_PDEATHSIG), when its parent named itself in SUPERVISOR_PID. Outside a container nothing
    else stops a training process whose entrypoint was SIGKILLed: it would keep the GPU and write
    to the volume. Elsewhere: no-op."""
    expected = os.environ.get(SUPERVISOR_PID, "")
    if not sys.platform.startswith("linux") or not expected.isdigit():
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(expected):  # the parent ended before the request: nobody will send it
        os.kill(os.getpid(), sig)


def killed_message(who: str) -> str:
    return (f"{who} was killed (SIGKILL): on a pod, usually the kernel's out-of-memory killer (host RAM); "
            "a smaller batch or fewer dataloader workers helps")


def _killed(who: str) -> int:
    """A SIGKILLed training process is the cause, whatever the others said after it (a rank whose
    peer vanished records "Connection reset by peer" first): it overwrites their error."""
    message = killed_message(who)
    log.info(f"launcher: {message}")
    write_state(output_dir_from_env(), error=message)
    return EXIT_KILLED


class _ChildExited(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def _simple_launcher(args) -> None:
    """accelerate's simple launcher (one process), keeping the child's exit code: accelerate's
    own exits 1 whatever the child's code was."""
    from accelerate.commands.launch import prepare_simple_launcher_cmd_env

    cmd, env = prepare_simple_launcher_cmd_env(args)
    child = subprocess.Popen(cmd, env=env)

    def stop(_signum, _frame):  # the entrypoint's stop, or its death (this process's PDEATHSIG)
        child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    code = child.wait()
    if code:
        raise _ChildExited(code)


def launcher_main(argv: list[str] | None = None) -> int:
    """`accelerate launch` (argv: its arguments); returns how the training processes ended."""
    die_with_parent()  # torchrun stops its workers on it; with one process the worker's own tie does
    os.environ[SUPERVISOR_PID] = str(os.getpid())  # the training processes' parent: this process
    import accelerate.commands.launch as accelerate_launch
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = accelerate_launch.launch_command_parser().parse_args(argv)
    accelerate_launch.simple_launcher = _simple_launcher  # the one launcher that hides the code
    try:
        accelerate_launch.launch_command(args)
    except _ChildExited as e:
        if e.code == -signal.SIGKILL:
            return _killed("the training process")
        return 128 - e.code if e.code < 0 else e.code
    except SignalException as e:  # torchrun stopped its workers on our SIGTERM / SIGINT
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        killed = sorted((rank, f.pid) for rank, f in e.failures.items() if f.exitcode == -signal.SIGKILL)
        if killed:
            return _killed(", ".join(f"training process rank {rank} (pid {pid})" for rank, pid in killed))
        _rank, first = e.get_first_failure()
        return 128 - first.exitcode if first.exitcode < 0 else first.exitcode
    return 0


class OutputDirBusy(Exception):
    """Another entrypoint runs on this OUTPUT_DIR."""


def hold_output_dir(output_dir: Path) -> int | None:
    """Take OUTPUT_DIR's lock for this process's lifetime (the kernel drops it when the process
    ends, however it ends); the lock's file descriptor, or None when OUTPUT_DIR cannot be written
    (the data check says so). Raises OutputDirBusy, naming the holder, when another has it: two
    entrypoints on one volume would resume the same checkpoint and append to the same spool."""
    path = Path(output_dir) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise OutputDirBusy(f"OUTPUT_DIR {output_dir} is in use by another entrypoint (pid {holder}); one job "
                                "runs on one OUTPUT_DIR at a time: wait for it to end, or give this one its own "
                                "OUTPUT_DIR") from None
        return None  # a file system without locks: go on as before
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


if __name__ == "__main__":
    sys.exit(launcher_main())
