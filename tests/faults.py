"""The fault suite's bookkeeping: run the entrypoint as a subprocess, judge how it ended, and keep
the totals that tests/conftest.py prints as the session's last line.

An outcome is one of: refused clearly (the expected exit code and a message naming the variable),
handled (exit 0 and every row accounted for), crashed (a traceback, or an exit code nobody
expects), hung (past its timeout; killed with every process under it). Rows lost and secrets
printed are counted on top.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from tests.e2e import ROOT, kill_tree_hard

#: Planted in every secret a case uses (URL signatures, passwords, tokens): never to be printed.
CANARY = "CANARYf4u1t"


@dataclass
class Tally:
    tried: int = 0
    refused: int = 0
    handled: int = 0
    crashed: int = 0
    hung: int = 0
    rows_lost: int = 0
    secrets: int = 0

    def line(self) -> str:
        return (f"faults: {self.tried} tried, {self.refused} refused clearly, {self.handled} handled, "
                f"{self.crashed} crashed, {self.hung} hung, {self.rows_lost} rows lost, {self.secrets} secrets printed")


TALLY = Tally()


@dataclass
class Ended:
    code: int | None  # None: it hung and was killed
    output: str


def run(env: dict[str, str], *args: str, timeout: float = 240) -> Ended:
    """The entrypoint to its end (stdout and stderr together); past `timeout`, killed as hung."""
    proc = subprocess.Popen([sys.executable, "entrypoint.py", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=timeout)
        return Ended(proc.returncode, output)
    except subprocess.TimeoutExpired:
        kill_tree_hard(proc)
        output, _ = proc.communicate()
        return Ended(None, output)


def judge(ended: Ended, *, code: int, says: list[str], lost: int = 0, handled: bool | None = None) -> None:
    """Count the outcome and fail the test unless it is the expected one: exit `code` with every
    string of `says` printed, no traceback, no canary, no row lost. It counts as handled when
    `handled` (default: code 0), else as refused clearly."""
    TALLY.tried += 1
    out = ended.output
    if CANARY in out:
        TALLY.secrets += 1
    TALLY.rows_lost += lost
    if ended.code is None:
        TALLY.hung += 1
        pytest.fail(f"hung; killed. Last output:\n{out[-3000:]}")
    clean = "Traceback" not in out and ended.code == code and all(s in out for s in says)
    if not clean:
        TALLY.crashed += 1
    elif handled or (handled is None and code == 0):
        TALLY.handled += 1
    else:
        TALLY.refused += 1
    assert "Traceback" not in out, out[-4000:]
    assert ended.code == code, f"exit {ended.code}, expected {code}:\n{out[-4000:]}"
    missing = [s for s in says if s not in out]
    assert not missing, f"not printed: {missing}\n{out[-4000:]}"
    assert CANARY not in out, "a secret was printed"
    assert lost == 0, f"{lost} rows lost"
