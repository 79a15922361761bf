"""The job's lifecycle with the platform, and the job's state on the volume.

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

OUTPUT_DIR/job_state.json ({job_id, status: running|completed|failed, exit_code, error, time, …})
lets a restarted pod recognise a job that already ended: it says so and stops instead of
training it again (on RunPod a container that exits is started again: a restart loop otherwise).
"""

from __future__ import annotations

import errno
import json
import math
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
from pydantic import SecretStr
from tenacity import (
    Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, stop_when_event_set,
    wait_exponential_jitter,
)

from trainer.config.load import EXIT_CONFIG, EXIT_MIGRATION, EXIT_PREFLIGHT, VARIABLES, ConfigError, JobConfig
from trainer.fetch import is_url
from trainer.redact import redact_url

STATE_FILE = "job_state.json"
EXIT_DISK_FULL = 74  # EX_IOERR: OUTPUT_DIR's device is full (a training process says so, without a traceback)
#: Failures found before training starts, checked again on every start in seconds: a rerun after
#: the fix just runs; unfixed, it fails again (and says so to the platform) without training.
RECHECKED_ON_START = (EXIT_CONFIG, EXIT_PREFLIGHT, EXIT_MIGRATION)
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


def log_line(msg: str) -> None:
    print(msg, flush=True)


# --- which calls are on ----------------------------------------------------------------------

@dataclass(frozen=True)
class PlatformCalls:
    """Where the platform's calls go. Secrets are SecretStr (their repr is '**********')."""

    job_id: str | None
    user_id: str | None
    model_name: str | None
    metrics_url: str | None
    alert_url: str | None
    job_token: SecretStr | None
    alert_key: SecretStr | None
    hf_repo: str | None
    hf_token: SecretStr | None

    @property
    def metrics_on(self) -> bool:
        return bool(self.metrics_url and self.job_token)

    @property
    def alerts_on(self) -> bool:
        return bool(self.alert_url and self.job_id and self.user_id)


def platform_calls(env) -> PlatformCalls:
    """The platform's calls from the environment (trainer.config.load.Environment). A half-set pair
    is a ConfigError naming what is missing."""
    metrics, token, alert, key = env.METRICS_API_URL, env.JOB_TOKEN, env.ALERT_API_URL, env.INTERNAL_API_KEY
    if metrics and not token:
        raise ConfigError("JOB_TOKEN", "not set, but METRICS_API_URL is: the platform's metrics route answers 401 "
                          "without `Authorization: Bearer <JOB_TOKEN>`; set both, or neither to leave metrics off")
    if token and not metrics:
        raise ConfigError("METRICS_API_URL", "not set, but JOB_TOKEN is: set the platform's metrics route "
                          "(<app>/api/training/local/metrics), or neither to leave metrics off")
    if key and not alert:
        raise ConfigError("ALERT_API_URL", "not set, but INTERNAL_API_KEY is: set the platform's alert route "
                          "(<app>/api/alerts/trigger), or neither to leave alerts off")
    for name, url in (("METRICS_API_URL", metrics), ("ALERT_API_URL", alert)):
        if url and not is_url(url):
            raise ConfigError(name, f"must be an http(s) URL, got {url!r}")
    if (metrics or alert) and not env.JOB_ID:
        raise ConfigError("JOB_ID", "not set; the platform's metrics and alert routes identify the job by it")
    if alert and not env.USER_ID:
        raise ConfigError("USER_ID", "not set; the platform's alert route refuses an alert without user_id (400)")
    if env.HF_REPO_NAME and not env.HF_TOKEN:
        raise ConfigError("HF_TOKEN", "not set, but HF_REPO_NAME is: uploading to the Hub needs a token with write access")
    return PlatformCalls(env.JOB_ID, env.USER_ID, env.MODEL_NAME, metrics, alert, token, key,
                         env.HF_REPO_NAME, env.HF_TOKEN)


def _calls_from_raw_environment() -> PlatformCalls:
    """The alert settings straight from os.environ, for a configuration that failed to parse."""
    get = lambda name: os.environ.get(name) or None  # noqa: E731 (an empty variable means unset)
    key = get("INTERNAL_API_KEY")
    return PlatformCalls(get("JOB_ID"), get("USER_ID"), get("MODEL_NAME"), None, get("ALERT_API_URL"), None,
                         SecretStr(key) if key else None, None, None)


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
        raise RejectedCallError(f"HTTP {r.status_code}: {r.text[:200]}")


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
               step: int | None = None, total_steps: int | None = None,
               log: Callable[[str], None] = log_line) -> bool:
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
        log(f"platform alerts: {kind} FAILED: {e}")
        return False
    log(f"platform alerts: {kind} sent")
    return True


class MetricsSender:
    """Metric points to METRICS_API_URL from a worker thread. `put` never blocks; a full queue
    drops the point (counted). What queued while a call was in flight goes in the next call."""

    def __init__(self, calls: PlatformCalls, *, log: Callable[[str], None] = log_line,
                 max_queue: int = METRICS_QUEUE, attempts: int = METRICS_ATTEMPTS):
        self._calls, self._log, self._attempts = calls, log, attempts
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
                    self._log(f"platform metrics: {len(batch)} points not sent ({e}); training goes on")
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


def metric_point(logs: dict, *, step: int, epoch: float | None, total_steps: int | None,
                 samples_per_second: float | None = None, gpu: dict | None = None) -> dict | None:
    """One point in the shape the platform's metrics route reads (MetricPoint), from a Trainer
    log; None for a log that is not a training or evaluation step (the closing summary)."""
    if "loss" not in logs and "eval_loss" not in logs:
        return None
    loss, eval_loss = _finite(logs.get("loss")), _finite(logs.get("eval_loss"))
    point = {
        "step": step,
        "epoch": _finite(logs.get("epoch", epoch)),
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
    point.update(gpu or {})
    return point


def gpu_memory() -> dict:
    """GPU memory of this process, in GB; empty on a CPU."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {"gpu_memory_allocated_gb": round(torch.cuda.memory_allocated() / 1e9, 3),
            "gpu_memory_reserved_gb": round(torch.cuda.memory_reserved() / 1e9, 3)}


# --- the job's state on the volume ----------------------------------------------------------

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_state(output_dir: Path) -> dict | None:
    """OUTPUT_DIR/job_state.json, or None when there is none (or it is unreadable: then it says so)."""
    path = Path(output_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError) as e:
        log_line(f"job state: {path} is unreadable ({e}); treated as absent")
        return None
    return state if isinstance(state, dict) else None


def write_state(output_dir: Path, *, replace: bool = False, **fields: Any) -> dict:
    """Merge `fields` into job_state.json (or replace it), atomically: a pod killed mid-write
    leaves the old file, never a torn one. An OUTPUT_DIR that cannot be written (the reason the
    pod is stopping, say) is logged: the state is lost, the alert that follows is still sent."""
    output_dir = Path(output_dir)
    state = {} if replace else (read_state(output_dir) or {})
    state.update(fields, time=_now())
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tmp = output_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(tmp, output_dir / STATE_FILE)
    except OSError as e:
        log_line(f"job state: cannot write {output_dir / STATE_FILE} ({e.strerror or e}); not kept on the volume")
    return state


def scrub(text: str) -> str:
    """`text` without the value of any secret variable (an exception's message may quote one)."""
    for name, (_what, _mode, secret) in VARIABLES.items():
        value = os.environ.get(name) if secret else None
        if value and len(value) >= 4:
            text = text.replace(value, f"<{name}>")
    return text


def record_failure(output_dir: Path, error: str) -> None:
    """A training process's error, for the parent's job_failed. The first error of an attempt
    wins: it is the cause; the other ranks' errors follow from it."""
    state = read_state(output_dir) or {}
    if not state.get("error"):
        write_state(output_dir, error=scrub(error)[-MAX_ERROR_CHARS:])


def describe_exception(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    if type(e).__name__ == "OutOfMemoryError":  # torch's; not imported here (the parent has no torch)
        return f"out of memory on the GPU: {text} (a smaller per_device_train_batch_size, gradient_checkpointing or LoRA helps)"
    return text


def child_main(main: Callable[[], int]) -> int:
    """Run a training process's main; an exception is recorded for the parent, then raised (the
    traceback stays in the log). A full disk is not a bug to debug: it is said plainly, without a
    traceback, and the process exits with EX_IOERR (74)."""
    output_dir = Path(os.environ.get("OUTPUT_DIR", "").strip() or os.environ.get("IMAGE_OUTPUT_DIR", "").strip()
                      or "outputs")  # as trainer/config/load.py resolves it
    try:
        return main()
    except Exception as e:
        if not _disk_full(e):
            record_failure(output_dir, describe_exception(e))
            raise
        message = (f"disk full: no space left on the device of {output_dir}; free "
                   f"space or mount a larger volume at OUTPUT_DIR. The predictions written so far are in "
                   f"{output_dir / 'predictions.jsonl'}; a restart resumes from the last complete checkpoint")
        log_line(message)
        record_failure(output_dir, message)
        return EXIT_DISK_FULL


def _disk_full(e: BaseException) -> bool:
    """ENOSPC, as an OSError or as a library's own error around it (safetensors raises a
    SafetensorError that says "No space left on device (os error 28)")."""
    return (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e)


def describe_exit(code: int) -> str:
    if code == 137:
        return ("the training processes were killed (SIGKILL): on a pod, usually the kernel's out-of-memory killer "
                "(host RAM); a smaller batch or fewer dataloader workers helps")
    return f"a training process exited with code {code}; its error is in the pod's log above"


#: Kept in place by a fresh run: inputs, not outputs (a signed URL may have expired since).
KEEP_ON_FRESH = ("previous", "downloads")


def _archive(output_dir: Path) -> Path | None:
    """Move the previous run's outputs aside (a rename: instant, and nothing is lost)."""
    entries = [e for e in output_dir.iterdir() if e.name not in KEEP_ON_FRESH] if output_dir.is_dir() else []
    if not entries:
        return None
    dest = output_dir / "previous" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest.mkdir(parents=True)
    for entry in entries:
        shutil.move(str(entry), str(dest / entry.name))
    return dest


def previous_outcome(cfg: JobConfig, *, fresh: bool, log: Callable[[str], None] = log_line) -> int | None:
    """What the volume says about this job: an exit code when it already ended (the pod stops
    without training again), None when it should run (first start, interrupted, or `fresh`)."""
    out, state = cfg.output_dir, read_state(cfg.output_dir)
    if fresh:
        dest = _archive(out)
        moved = f"the previous outputs were moved to {dest}" if dest else "nothing to move aside"
        log(f"fresh run (FRESH_RUN / --fresh): training job {cfg.job_id} from zero; {moved}")
        log("fresh run: unset FRESH_RUN after this run, or every restart of the pod trains from zero again")
        return None
    if state is None:
        return None
    if state.get("job_id") != cfg.job_id:
        log(f"job state: {out / STATE_FILE} belongs to job {state.get('job_id')!r}, not {cfg.job_id!r}; "
            "starting this job")
        return None
    status, when = state.get("status"), state.get("time")
    calls = cfg.platform or _calls_from_raw_environment()
    progress = {"loss": state.get("loss"), "step": state.get("step"), "total_steps": state.get("total_steps")}
    if status == "completed":
        log(f"job {cfg.job_id} is already complete (finished {when}): the model is in {out / 'final'}, "
            f"its predictions in {cfg.predictions_path}; nothing to train")
        log("to train it again from zero, set FRESH_RUN=1 (or run `entrypoint.py run --fresh`)")
        send_alert(calls, "job_completed", log=log, **progress)  # the pod still runs: the platform missed it
        return 0
    if status == "failed" and state.get("exit_code") in RECHECKED_ON_START:
        log(f"job {cfg.job_id} failed earlier before training (exit {state['exit_code']}, {when}): "
            f"{state.get('error')}; checking again")
        return None
    if status == "failed":
        code = int(state.get("exit_code") or 1)
        log(f"job {cfg.job_id} failed earlier (exit {code}, {when}): {state.get('error')}")
        log("not training it again (a restarted pod must not loop): fix the cause, then set FRESH_RUN=1 to start "
            f"from zero, or delete {out / STATE_FILE} to resume from the newest checkpoint")
        send_alert(calls, "job_failed", error=state.get("error"), log=log, **progress)
        return code
    log(f"job {cfg.job_id} was interrupted (state {status!r} since {when}, step {state.get('step')}); resuming")
    return None


def mark_running(cfg: JobConfig) -> None:
    """Before the training processes start: this attempt's state, no error yet."""
    previous = read_state(cfg.output_dir) or {}
    same = previous.get("job_id") == cfg.job_id
    write_state(cfg.output_dir, replace=True, job_id=cfg.job_id, status="running", exit_code=None, error=None,
                attempt=(previous.get("attempt", 0) + 1) if same else 1,
                **{k: previous[k] for k in ("step", "total_steps", "loss") if same and k in previous})


def finish(cfg: JobConfig, code: int, *, error: str | None = None, log: Callable[[str], None] = log_line) -> int:
    """After the attempt: the job's state on the volume, the Hub upload, and job_completed or
    job_failed. Returns the pod's exit code. SIGTERM / SIGINT (the pod being stopped) is an
    interruption, not a failure: the state stays running, so that a restart resumes."""
    state = read_state(cfg.output_dir) or {}
    progress = {"loss": state.get("loss"), "step": state.get("step"), "total_steps": state.get("total_steps")}
    calls = cfg.platform or _calls_from_raw_environment()
    if code in (130, 143):
        log(f"job state: interrupted (exit {code}); still running on the volume: a restart resumes")
        return code
    if code == 0:
        upload_to_hub(cfg, log=log)
        write_state(cfg.output_dir, status="completed", exit_code=0, error=None)
        send_alert(calls, "job_completed", log=log, **progress)
        return 0
    error = scrub(error or state.get("error") or describe_exit(code))
    if error.startswith("disk full:"):
        code = EXIT_DISK_FULL  # the launcher turns a training process's own code into 1
    write_state(cfg.output_dir, job_id=cfg.job_id, status="failed", exit_code=code, error=error)
    log(f"job failed (exit {code}): {error}")
    send_alert(calls, "job_failed", error=error, log=log, **progress)
    return code


def config_failed(error: str, *, log: Callable[[str], None] = log_line) -> None:
    """The configuration did not parse: job_failed when the alert's own variables are there."""
    send_alert(_calls_from_raw_environment(), "job_failed", error=scrub(f"configuration error: {error}"), log=log)


def upload_to_hub(cfg: JobConfig, *, log: Callable[[str], None] = log_line) -> bool:
    """Upload the final model (the merged one when there is one) to HF_REPO_NAME. Never fatal:
    a failure is logged and the model stays on the volume."""
    calls = cfg.platform
    if calls is None or not calls.hf_repo or not calls.hf_token:
        return False
    folder = cfg.output_dir / "final-merged"
    if not folder.is_dir():
        folder = cfg.output_dir / "final"
    token = calls.hf_token.get_secret_value()
    log(f"hub upload: {folder} → {calls.hf_repo} (private)")
    try:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(calls.hf_repo, private=True, exist_ok=True)
        api.upload_folder(repo_id=calls.hf_repo, folder_path=str(folder), commit_message=f"job {cfg.job_id}")
    # The Hub client raises HTTP errors, OSError and ValueError alike; none of them may fail a
    # job whose model is trained and saved.
    except Exception as e:  # noqa: BLE001
        message = f"{type(e).__name__}: {e}".replace(token, "***").splitlines()[0][:500]
        log(f"hub upload: FAILED ({message}); the model stays in {folder}")
        return False
    log(f"hub upload: done: https://huggingface.co/{calls.hf_repo}")
    return True
