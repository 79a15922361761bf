"""The machine's processes as /proc shows them: a process's descendants, whether one is still
alive, and the processes whose environment (or cgroup) names something."""

from __future__ import annotations

import os
from collections.abc import Iterator


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's name (state, ppid, …); None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:  # gone, or going, while we looked
        return None


def descendants(pid: int) -> list[int]:
    """Every process under `pid`: its children, theirs, and so on."""
    found = []
    for child in _pids():
        fields = _stat(child)
        if fields is not None and int(fields[1]) == pid:
            found += [child, *descendants(child)]
    return found


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def processes_with(marker: str, file: str = "environ") -> list[int]:
    """Processes (other than this one) whose /proc/PID/`file` holds `marker`: an OUTPUT_DIR in
    the environment (`environ`), a container's id in `cgroup`."""
    found = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/{file}", "rb") as f:
                if marker.encode() in f.read():
                    found.append(pid)
        except OSError:
            continue  # the process ended while we looked
    return found
