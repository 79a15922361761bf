"""The platform's routes: metrics and alerts, as its route handlers expect them (the job's state on
the volume is trainer/pod/state.py; the job across starts, trainer/pod/job.py).

The platform learns that a job runs, how far it is and how it ended only from the pod's calls
(its route handlers, read from its source):
- metrics: POST METRICS_API_URL `{job_id, metrics: [point, …]}` with `Authorization: Bearer
  JOB_TOKEN` (app/api/training/local/metrics/route.ts: 401 without the Bearer header or on a token
  mismatch, 400 without job_id or with an empty metrics array; the first call moves the job from
  pending to running; the point with the highest step updates the job's progress);
- alerts: POST ALERT_API_URL `{type, job_id, user_id, model_name, status, error_message, loss,
  current_step, total_steps, progress}` with `X-API-Key: INTERNAL_API_KEY`
  (app/api/alerts/trigger/route.ts: 401 on a wrong key, 400 without a known type, job_id or
  user_id). job_completed / job_failed mark the job and terminate its RunPod pod: a pod that never
  sends one keeps running and billing.

Neither ever stops or slows training: metrics go through a bounded queue to a worker thread;
alerts are retried a few times and then logged. Secrets go only into request headers.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from datetime import datetime, timezone

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)

from trainer.config.calls import PlatformCalls
from trainer.redact import hide, redact_url

log = logging.getLogger(__name__)

ALERT_ATTEMPTS = 4  # job_completed / job_failed terminate the pod: worth a few tries
METRICS_ATTEMPTS = 4
HTTP_TIMEOUT_S = 10.0
METRICS_QUEUE = 1000  # points waiting to be sent; more are dropped (and counted), never blocking
METRICS_BATCH = 100  # points per call; what queued while the previous call was in flight
METRICS_DRAIN_S = 10.0  # at the end, how long the last points may take to go out
MAX_ERROR_CHARS = 4000  # the platform stores error_message in the job row


class TransientCallError(Exception):
    """A call that may succeed if tried again: connection refused, timeout, 5xx, 429."""


class RejectedCallError(Exception):
    """The platform refused the call (4xx other than 429): retrying the same request won't help."""


def describe(calls: PlatformCalls) -> list[str]:
    """The startup report's lines: which calls to the platform are on or off, and why."""
    lines = []
    if calls.metrics_on:
        lines.append(f"platform metrics: on: POST {redact_url(calls.metrics_url)} as the Trainer logs "
                     "(Authorization: Bearer JOB_TOKEN), off the training thread")
    else:
        lines.append("platform metrics: off: METRICS_API_URL and JOB_TOKEN are not set")
    if calls.alerts_on:
        auth = "X-API-Key: INTERNAL_API_KEY" if calls.alert_key else (
            "without X-API-Key: INTERNAL_API_KEY is empty; the platform's route accepts that only when it has no key itself")
        lines.append(f"platform alerts: on: job_started / job_completed / job_failed to {redact_url(calls.alert_url)} ({auth})")
    else:
        lines.append("platform alerts: off: ALERT_API_URL is not set (nothing tells the platform that the job ended)")
    if calls.hf_repo:
        lines.append(f"hub upload: on: the final model goes to the private repository {calls.hf_repo} at the end")
    else:
        lines.append("hub upload: off: HF_REPO_NAME is not set")
    if calls.hf_token:
        lines.append("HF_TOKEN: set; the Hub client reads it from the environment (gated models)")
    return lines


# --- HTTP calls ------------------------------------------------------------------------------

def _post(client: httpx.Client, url: str, payload: dict, headers: dict[str, str]) -> None:
    try:
        r = client.post(url, json=payload, headers=headers)
    except httpx.TransportError as e:  # connection refused, timeouts, resets
        raise TransientCallError(f"{type(e).__name__}: {e}") from None
    if r.status_code == 429 or r.status_code >= 500:
        raise TransientCallError(f"HTTP {r.status_code}")
    if r.status_code >= 400:
        # The server's text may echo our headers (a 401 quoting the Authorization it got): hidden.
        ours = [v.removeprefix("Bearer ") for v in headers.values()]
        raise RejectedCallError(f"HTTP {r.status_code}: {hide(r.text, *ours)[:200]}")


def _post_with_retries(client, url, payload, headers, *, attempts: int, max_wait_s: float,
                       give_up: threading.Event | None = None) -> None:
    stop, sleep = stop_after_attempt(attempts) | stop_after_delay(60), time.sleep
    if give_up is not None:  # at the end of training: no more waiting between tries
        stop, sleep = stop | stop_when_event_set(give_up), give_up.wait
    for attempt in Retrying(retry=retry_if_exception_type(TransientCallError), reraise=True, stop=stop, sleep=sleep,
                            wait=wait_exponential_jitter(multiplier=0.5, max=max_wait_s)):
        with attempt:
            _post(client, url, payload, headers)


def _finite(value) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return value
    return None


def send_alert(calls: PlatformCalls, kind: str, *, error: str | None = None, loss: float | None = None,
               step: int | None = None, total_steps: int | None = None) -> bool:
    """POST one alert (job_started / job_completed / job_failed); True when the platform took it.
    Never raises: a failed alert is logged."""
    if not calls.alerts_on:
        return False
    payload = {
        "type": kind, "job_id": calls.job_id, "user_id": calls.user_id, "model_name": calls.model_name,
        "status": kind.removeprefix("job_"),
        "error_message": error[-MAX_ERROR_CHARS:] if error else None,  # a traceback's end names the cause
        "loss": _finite(loss), "current_step": step, "total_steps": total_steps,
        "progress": round(100 * step / total_steps, 2) if step and total_steps else None,
    }
    headers = {"X-API-Key": calls.alert_key.get_secret_value()} if calls.alert_key else {}
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            _post_with_retries(client, calls.alert_url, payload, headers, attempts=ALERT_ATTEMPTS, max_wait_s=8)
    except (TransientCallError, RejectedCallError) as e:
        log.info(f"platform alerts: {kind} FAILED: {e}")
        return False
    log.info(f"platform alerts: {kind} sent")
    return True


class MetricsSender:
    """Metric points to METRICS_API_URL from a worker thread. `put` never blocks; a full queue
    drops the point (counted). What queued while a call was in flight goes in the next call."""

    def __init__(self, calls: PlatformCalls, *, max_queue: int = METRICS_QUEUE, attempts: int = METRICS_ATTEMPTS):
        self._calls, self._attempts = calls, attempts
        self._queue: queue.Queue[dict] = queue.Queue(max_queue)
        self._stop = threading.Event()
        self.sent = self.calls_made = self.failed = self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="platform-metrics", daemon=True)
        self._thread.start()

    def put(self, point: dict) -> None:
        try:
            self._queue.put_nowait(point)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self._calls.job_token.get_secret_value()}"}
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as client:
            while not (self._stop.is_set() and self._queue.empty()):
                try:
                    batch = [self._queue.get(timeout=0.2)]
                except queue.Empty:
                    continue
                while len(batch) < METRICS_BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                payload = {"job_id": self._calls.job_id, "metrics": batch}
                try:
                    _post_with_retries(client, self._calls.metrics_url, payload, headers,
                                       attempts=self._attempts, max_wait_s=8, give_up=self._stop)
                except (TransientCallError, RejectedCallError) as e:
                    self.failed += len(batch)
                    log.info(f"platform metrics: {len(batch)} points not sent ({e}); training goes on")
                    continue
                self.sent += len(batch)
                self.calls_made += 1

    def close(self, timeout_s: float = METRICS_DRAIN_S) -> str:
        """Let the worker send what is queued, for at most timeout_s; a summary line."""
        self._stop.set()
        self._thread.join(timeout_s)
        pending = self._queue.qsize()
        return (f"platform metrics: {self.sent} points sent in {self.calls_made} calls; {self.failed} failed, "
                f"{self.dropped} dropped (queue full), {pending} not sent by the end")


#: The platform's trainer's constants (standalone_trainer.py RECENT_LOSSES_MAX_LENGTH,
#: MIN_LOSSES_FOR_TREND_ANALYSIS, LOSS_IMPROVEMENT_THRESHOLD).
TREND_WINDOW, TREND_MIN, TREND_THRESHOLD = 10, 3, 0.01


class BestModel:
    """The best-model fields of the platform's metric points (loss_trend, best_eval_loss,
    best_epoch, best_step, epochs_without_improvement), computed as its trainer's
    TrainingMetricsCallback computes them: the best checkpoint by its score (half the eval loss,
    a penalty for the train/eval gap and for perplexity, a bonus for a fresh improvement, the
    previous best scored without a train loss), "epochs without improvement" 0 or 1 against the
    previous evaluation, and the trend over the last 10 train losses. One difference: its trend
    window re-counts the last logged loss at every step between logs; here each log counts once."""

    def __init__(self) -> None:
        self.best_eval_loss: float | None = None
        self.best_epoch = self.best_step = self.epochs_without_improvement = 0
        self._last_eval: float | None = None
        self._losses: list[float] = []

    @staticmethod
    def _score(eval_loss: float, train_loss: float | None, without_improvement: int) -> float:
        gap = abs(train_loss - eval_loss) / max(eval_loss, 0.001) * 0.3 if train_loss is not None else 0.0
        perplexity = min(math.exp(min(eval_loss, 50)) / 20.0, 1.0) * 0.1
        return eval_loss * 0.5 + gap + perplexity + (-0.1 if without_improvement == 0 else 0.0)

    def update(self, *, step: int, epoch: int, loss: float | None, eval_loss: float | None) -> dict:
        """Take one log's losses; the fields for its point."""
        if eval_loss is not None:
            train = loss if loss is not None else (self._losses[-1] if self._losses else None)
            previous = (self._score(self.best_eval_loss, None, 1) if self.best_eval_loss is not None
                        else math.inf)
            if self._score(eval_loss, train, self.epochs_without_improvement) < previous:
                self.best_eval_loss, self.best_epoch, self.best_step = eval_loss, epoch, step
            self.epochs_without_improvement = 0 if self._last_eval is None or eval_loss < self._last_eval else 1
            self._last_eval = eval_loss
        if loss is not None:
            self._losses = [*self._losses, loss][-TREND_WINDOW:]
        return {"loss_trend": self.trend(), "best_eval_loss": round(self.best_eval_loss, 6)
                if self.best_eval_loss is not None else None, "best_epoch": self.best_epoch,
                "best_step": self.best_step, "epochs_without_improvement": self.epochs_without_improvement}

    def trend(self) -> str:
        n = len(self._losses)
        if n < TREND_MIN:
            return "insufficient_data"
        first, second = self._losses[: n // 2], self._losses[n // 2:]
        diff = sum(first) / len(first) - sum(second) / len(second)
        return "improving" if diff > TREND_THRESHOLD else "degrading" if diff < -TREND_THRESHOLD else "stable"


#: The Trainer's log keys metric_point maps to the route's own fields.
MAPPED_LOG_KEYS = ("loss", "eval_loss", "epoch", "learning_rate", "grad_norm")


def metric_point(logs: dict, *, step: int, epoch: float | None, total_steps: int | None,
                 samples_per_second: float | None = None, gpu: dict | None = None,
                 best: BestModel | None = None) -> dict | None:
    """One point in the shape the platform's metrics route reads (MetricPoint), from a Trainer
    log; None for a log that is not a training or evaluation step (the closing summary). `epoch`
    is the integer epoch, as the platform's trainer sends it (`int(state.epoch)`; its table's
    column is an integer); `best` adds the best-model fields its UI shows."""
    if "loss" not in logs and "eval_loss" not in logs:
        return None
    loss, eval_loss = _finite(logs.get("loss")), _finite(logs.get("eval_loss"))
    whole = int(_finite(logs.get("epoch", epoch)) or 0)
    point = {
        "step": step,
        "epoch": whole,
        "train_loss": loss,
        "eval_loss": eval_loss,
        "learning_rate": _finite(logs.get("learning_rate")),
        "grad_norm": _finite(logs.get("grad_norm")),
        "samples_per_second": _finite(samples_per_second),
        "train_perplexity": _finite(math.exp(min(loss, 50))) if loss is not None else None,
        "perplexity": _finite(math.exp(min(eval_loss, 50))) if eval_loss is not None else None,
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
        # Not columns of the platform's table (its route ignores them); they say how far the job is.
        "total_steps": total_steps,
        "progress": round(100 * step / total_steps, 2) if total_steps else None,
    }
    if best is not None:
        point.update(best.update(step=step, epoch=whole, loss=loss, eval_loss=eval_loss))
    # The method's own metrics (TRL's rewards/margins, rewards/accuracies, logps/chosen, …; eval_ ones
    # too) as extra keys. The route as deployed inserts its own fields and ignores the others (as it
    # does total_steps): they reach it, for the day it keeps them.
    point.update({k: _finite(v) for k, v in logs.items() if k not in MAPPED_LOG_KEYS and k not in point
                  and isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) is not None})
    point.update(gpu or {})
    return point


def gpu_memory() -> dict:
    """GPU memory of this process, in GB; empty on a CPU."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"gpu_memory_allocated_gb": round(torch.cuda.memory_allocated() / 1e9, 3),
            "gpu_memory_reserved_gb": round(torch.cuda.memory_reserved() / 1e9, 3)}
