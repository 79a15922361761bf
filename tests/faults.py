"""The fault suite's bookkeeping: run the entrypoint as a subprocess, judge how it ended, and keep
the totals that tests/conftest.py prints as the session's last line.

An outcome is one of: refused clearly (the expected exit code and a message naming the variable),
handled (exit 0 and every row accounted for), crashed (a traceback, or an exit code nobody
expects), hung (past its timeout; killed with every process under it). Rows lost and secrets
printed are counted on top.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
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


class FileServer:
    """Loopback HTTP: serves `files` by path (query ignored), optionally with Content-Encoding:
    gzip; `refuse` paths answer 403 like an expired signed storage URL."""

    def __init__(self, files: dict[str, bytes], *, gzip_encoded: set[str] = frozenset(), refuse: set[str] = frozenset()):
        outer = self
        self.hits: list[str] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 — the stdlib's name
                path = self.path.split("?")[0]
                outer.hits.append(path)
                if path in refuse:
                    body = b'{"statusCode":"403","error":"InvalidJWT","message":"jwt expired"}'
                    self.send_response(403)
                elif path in files:
                    body = files[path]
                    self.send_response(200)
                    if path in gzip_encoded:
                        self.send_header("Content-Encoding", "gzip")
                else:
                    body = b"not found"
                    self.send_response(404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def signed(self, path: str) -> str:
        """A signed-looking URL of `path`: a token in the query and userinfo, both canaries."""
        return f"{self.url.replace('://', f'://user:{CANARY}@')}{path}?token={CANARY}-signature"

    def close(self) -> None:
        self.httpd.shutdown()
