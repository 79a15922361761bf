"""A double of the platform's metrics and alert routes (app/api/training/local/metrics/route.ts,
app/api/alerts/trigger/route.ts), written from their handlers: it validates what it receives."""

from __future__ import annotations

import http.server
import json
import time

from tests.http_servers import LoopbackServer

METRICS_PATH, ALERT_PATH = "/api/training/local/metrics", "/api/alerts/trigger"
ALERT_TYPES = {"job_started", "job_completed", "job_failed", "job_cancelled", "gpu_oom", "disk_warning",
               "timeout_warning"}


class PlatformDouble:
    """The platform's metrics and alert routes as their handlers behave (route.ts): 401 without
    the right Bearer token / X-API-Key, 400 on a body they cannot use; records what they accept.
    `delay_s` makes the metrics route slow; `fail_first` answers that many calls with 503."""

    def __init__(self, job: str, token: str, key: str, *, delay_s: float = 0.0, fail_first: int = 0):
        self.metrics: list[dict] = []  # accepted metric calls' bodies
        self.alerts: list[dict] = []
        self.refused: list[tuple[str, int, str]] = []
        self.calls = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, body: dict) -> None:
                if status >= 400:
                    outer.refused.append((self.path, status, body.get("error", "")))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw) if raw.strip() else None
                except json.JSONDecodeError:
                    return "invalid"

            def do_POST(self):  # noqa: N802
                outer.calls += 1
                body = self._body()
                if outer.calls <= fail_first:
                    return self._answer(503, {"error": "unavailable"})
                if self.path == METRICS_PATH:
                    return self._metrics(body)
                if self.path == ALERT_PATH:
                    return self._alert(body)
                return self._answer(404, {"error": "not found"})

            def _metrics(self, body):
                time.sleep(delay_s)
                auth = self.headers.get("Authorization") or ""
                if not auth.startswith("Bearer "):
                    return self._answer(401, {"error": "Unauthorized: Bearer token required"})
                if body is None or body == "invalid":
                    return self._answer(400, {"error": "Invalid JSON in request body"})
                if not body.get("job_id"):
                    return self._answer(400, {"error": "job_id is required"})
                points = body.get("metrics")
                if not isinstance(points, list) or not points:
                    return self._answer(400, {"error": "metrics array is required and must not be empty"})
                if body["job_id"] != job:
                    return self._answer(404, {"error": "Job not found"})
                if auth[7:] != token:
                    return self._answer(401, {"error": "Unauthorized: Invalid token"})
                for p in points:  # the handler reads m.step, m.epoch and numbers or nulls
                    assert isinstance(p["step"], int) and isinstance(p["epoch"], (int, float)), p
                    for k in ("train_loss", "eval_loss", "learning_rate", "grad_norm", "samples_per_second"):
                        assert p.get(k) is None or isinstance(p[k], (int, float)), (k, p)
                outer.metrics.append(body)
                return self._answer(200, {"success": True, "count": len(points)})

            def _alert(self, body):
                if self.headers.get("X-API-Key") != key:
                    return self._answer(401, {"error": "Unauthorized"})
                if not isinstance(body, dict) or body.get("type") not in ALERT_TYPES:
                    return self._answer(400, {"error": "Invalid alert type"})
                if not body.get("job_id") or not body.get("user_id"):
                    return self._answer(400, {"error": "job_id and user_id are required"})
                outer.alerts.append(body)
                return self._answer(200, {"success": True})

            def do_GET(self):  # noqa: N802
                self._answer(405, {"error": "method not allowed"})

            def log_message(self, *args):
                return None

        self.server = LoopbackServer(Handler)
        self.url = self.server.url

    def points(self) -> list[dict]:
        return [p for body in self.metrics for p in body["metrics"]]

    def types(self) -> list[str]:
        return [a["type"] for a in self.alerts]

    def close(self) -> None:
        self.server.close()


