"""The HTML report in a real headless Chromium (Debian's `chromium`), driven over the DevTools
protocol: it loads with no console error, the chart and the comparison are there, the regressed
filter shows exactly the regressed samples, and a screenshot is kept under the test's tmp dir."""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import time

import httpx
import pytest

from predictions.report.history import build_history
from predictions.report.view import write_html
from tests.test_history import JOB, scenario

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary (apt-get install chromium; scripts/setup.sh --with-postgres installs it)")]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--remote-debugging-port=0", "--window-size=1200,900"]


class DevTools:
    """A minimal DevTools protocol client over one page target (websockets' sync client)."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def call(self, method: str, timeout: float = 60, **params):
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == msg_id:
                assert "error" not in msg, msg
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.events:
                if e.get("method") == method:
                    return e
            self.events.append(json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic()))))

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def errors(self) -> list[str]:
        found = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                found.append(json.dumps(p["exceptionDetails"])[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                found.append(json.dumps(p.get("args"))[:500])
            elif e.get("method") == "Log.entryAdded" and p["entry"].get("level") == "error":
                found.append(p["entry"].get("text", "")[:500])
        return found


@pytest.fixture
def browser(tmp_path):
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        deadline = time.monotonic() + 90
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"chromium exited with {proc.returncode}")
            found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(found.group(1)) if found else None
        assert port, "chromium did not open its DevTools port within 90 s"
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=30).json()
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def test_the_report_in_chromium(browser, tmp_path):
    page = write_html(build_history(scenario(), job_id=JOB), tmp_path / "predictions_report.html")
    for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
        browser.call(domain)
    browser.call("Page.navigate", url=page.as_uri())
    browser.wait_event("Page.loadEventFired")

    assert browser.js("document.querySelectorAll('#score-chart polyline.series').length") == 3
    assert browser.js("document.querySelectorAll('section.sample').length") == 3
    assert browser.js("document.querySelectorAll('table.changes ins').length") > 0  # the comparison, diffed
    visible = "Array.from(document.querySelectorAll('section.sample')).filter(s => !s.hidden).map(s => s.id)"
    assert browser.js(visible) == ["sample-0", "sample-1", "sample-2"]
    browser.js("document.querySelector('button[data-filter=regressed]').click()")
    assert browser.js(visible) == ["sample-1", "sample-2"]
    assert browser.js("document.querySelector('#sample-1 .badge.regressed').textContent") == "regressed"
    assert browser.js("document.querySelector('#sample-1 details').open") is True  # regressed: expanded
    browser.js("document.querySelector('button[data-filter=never]').click()")
    assert browser.js(visible) == ["sample-2"]

    shot = browser.call("Page.captureScreenshot", format="png")
    png = tmp_path / "report.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    assert browser.errors() == []


def test_a_large_report_is_paged(browser, tmp_path):
    from tests.test_history import new_row

    rows = [new_row(step, i, "a b" if (step == 10 and i % 2) else "b", "a b")
            for step in (0, 10, 20) for i in range(120)]  # the odd samples: right at 10, lost at 20
    page = write_html(build_history(rows, job_id=JOB), tmp_path / "large.html")
    for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
        browser.call(domain)
    browser.call("Page.navigate", url=page.as_uri())
    browser.wait_event("Page.loadEventFired")
    shown = "Array.from(document.querySelectorAll('section.sample')).filter(s => !s.hidden).map(s => s.id)"
    assert browser.js(shown) == [f"sample-{i}" for i in range(50)]
    assert browser.js("document.getElementById('page-label').textContent") == "page 1 of 3 (120 samples)"
    browser.js("document.getElementById('next').click()")
    assert browser.js(shown) == [f"sample-{i}" for i in range(50, 100)]
    browser.js("document.querySelector('button[data-filter=regressed]').click()")  # back to page 1 of 60
    assert browser.js(shown) == [f"sample-{i}" for i in range(1, 100, 2)]
    assert browser.js("document.querySelectorAll('details[open]').length") == 20  # the first regressed, expanded
    assert browser.errors() == []
