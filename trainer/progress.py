"""What a training run reports while it trains: one progress line per interval (how far, how
fast, when it ends), and the platform's metrics and job_started (trainer/pod/platform.py sends them).

Pod logs are read line by line (RunPod's log view, `docker logs`): no carriage-return bars. The
callbacks decide when (main process only); `progress_line`, `next_round_step` and
`platform.metric_point` are plain functions.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Callable

from transformers import TrainerCallback

from trainer.pod import platform
from trainer.pod.state import write_state

log = logging.getLogger(__name__)

INTERVAL_S = 30.0


def duration(seconds: float) -> str:
    """3725 → '1h02m05s'; 65 → '1m05s'; 4 → '4s'."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def next_round_step(frequency: str, *, step: int, max_steps: int, steps_per_epoch: int | None,
                    step_interval: int | None = None, eval_strategy: str | None = None,
                    eval_steps: int | None = None) -> int | None:
    """The step of the next prediction round after `step`, or None when no round is left."""
    if frequency == "eval":
        frequency, step_interval = ("steps", eval_steps) if eval_strategy == "steps" else (
            ("epoch", None) if eval_strategy == "epoch" else (None, None))
    if frequency == "steps" and step_interval:
        nxt = (step // step_interval + 1) * step_interval
    elif frequency == "epoch" and steps_per_epoch:
        nxt = min((step // steps_per_epoch + 1) * steps_per_epoch, max_steps)
    else:
        return None
    return nxt if nxt <= max_steps and nxt > step else None


def progress_line(*, step: int, total: int, rate: float | None, loss: float | None,
                  next_round: int | None | bool = False) -> str:
    """'progress: step 120/400 (30.0%), 2.10 steps/s, ETA 2m13s, loss 0.4213, next prediction round at step 150'.
    next_round False: predictions are off (not mentioned); None: no round left."""
    parts = [f"progress: step {step}/{total} ({100 * step / total:.1f}%)" if total else f"progress: step {step}"]
    if rate:
        parts.append(f"{rate:.2f} steps/s")
        parts.append(f"ETA {duration((total - step) / rate)}" if total else "ETA unknown")
    else:
        parts.append("ETA unknown (no step timed yet)")
    if loss is not None and math.isfinite(loss):
        parts.append(f"loss {loss:.4f}")
    if next_round is None:
        parts.append("no prediction round left")
    elif next_round is not False:
        parts.append(f"next prediction round at step {next_round}")
    return ", ".join(parts)


class ProgressCallback(TrainerCallback):
    """Prints `progress_line` on the main process every `interval_s` and at each log step."""

    def __init__(self, cfg, *, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self._p, self._t = cfg.predictions, cfg.training
        self._interval, self._clock = interval_s, clock
        self._loss: float | None = None
        self._steps_per_epoch: int | None = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self._start = self._last = self._clock()
        self._first_step = state.global_step  # a resumed run times only its own steps
        if train_dataloader is not None:
            self._steps_per_epoch = max(math.ceil(len(train_dataloader) / args.gradient_accumulation_steps), 1)

    def _print(self, state) -> None:
        now = self._clock()
        done = state.global_step - self._first_step
        rate = done / (now - self._start) if done > 0 and now > self._start else None
        nxt: int | None | bool = False
        if self._p.enabled:
            nxt = next_round_step(self._p.sample_frequency, step=state.global_step, max_steps=state.max_steps,
                                  steps_per_epoch=self._steps_per_epoch, step_interval=self._p.step_interval,
                                  eval_strategy=self._t.eval_strategy, eval_steps=self._t.eval_steps)
        log.info(progress_line(step=state.global_step, total=state.max_steps, rate=rate, loss=self._loss,
                                next_round=nxt))
        self._last = now

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self._clock() - self._last >= self._interval:
            self._print(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        self._loss = logs["loss"]
        self._print(state)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            took = self._clock() - self._start
            log.info(f"progress: done: step {state.global_step}/{state.max_steps} in {duration(took)}")


class PlatformCallback(TrainerCallback):
    """Main process only: job_started when training starts, a metric point per log, the job's
    progress in job_state.json (the parent's job_completed / job_failed carry it)."""

    def __init__(self, cfg):
        self._calls, self._out = cfg.platform, cfg.output_dir
        self._sender: platform.MetricsSender | None = None
        self._best = platform.BestModel()
        self._started: threading.Thread | None = None
        self._last: tuple[int, float] = (0, time.monotonic())

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        self._last = (state.global_step, time.monotonic())
        write_state(self._out, step=state.global_step, total_steps=state.max_steps)
        if self._calls is None:
            return
        if self._calls.metrics_on:
            self._sender = platform.MetricsSender(self._calls)
        if self._calls.alerts_on:  # in a thread: a slow alert route must not delay the first step
            self._started = threading.Thread(
                target=platform.send_alert, args=(self._calls, "job_started"), daemon=True,
                kwargs={"step": state.global_step, "total_steps": state.max_steps})
            self._started.start()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        step, now = state.global_step, time.monotonic()
        rate = None
        if step > self._last[0]:
            rate = (step - self._last[0]) * self._batch / max(now - self._last[1], 1e-9)
            self._last = (step, now)
        point = platform.metric_point(logs, step=step, epoch=state.epoch, total_steps=state.max_steps,
                                       samples_per_second=rate, gpu=platform.gpu_memory(), best=self._best)
        if point is None:
            return
        progress = {"step": step, "total_steps": state.max_steps}
        if point["train_loss"] is not None:
            progress["loss"] = point["train_loss"]
        write_state(self._out, **progress)
        if self._sender is not None:
            self._sender.put(point)

    def on_train_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        if self._started is not None:
            self._started.join(platform.HTTP_TIMEOUT_S)
        if self._sender is not None:
            log.info(self._sender.close())


def callbacks(cfg) -> list[TrainerCallback]:
    """The progress line's and the platform's callbacks, for trainer/train.py."""
    return [ProgressCallback(cfg), PlatformCallback(cfg)]
