"""The job across pod starts: what the volume says about it before training (ended: stop without
training again; interrupted: resume; `fresh`: archive and start over), its state while it runs,
and its end (the state, the Hub upload, job_completed or job_failed)."""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timezone
from pathlib import Path

from trainer.config.calls import calls_from_raw_environment
from trainer.config.exits import EXIT_DISK_FULL, EXIT_KILLED, RECHECKED_ON_START, STOPPED
from trainer.config.job import JobConfig
from trainer.pod.hub import upload_to_hub
from trainer.pod.platform import send_alert
from trainer.pod.state import STATE_FILE, newest_complete, read_state, write_state
from trainer.redact import redact_url, scrub

log = logging.getLogger(__name__)


def describe_exit(code: int) -> str:
    if code == EXIT_KILLED:
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


def settings(cfg: JobConfig) -> dict[str, object]:
    """The run's settings as flat `key: value` (training.*, predictions.*, the model and data; URLs
    without their query string, no secret), kept in the job's state to compare a rerun with."""
    flat: dict[str, object] = {"MODEL_NAME": cfg.model_name, "DATASET_PATH": redact_url(cfg.dataset_path),
                               "EVAL_DATASET_PATH": redact_url(cfg.eval_dataset_path or "") or None}
    for block, model in (("training", cfg.training), ("predictions", cfg.predictions)):
        for key, value in model.model_dump(mode="json").items():
            flat[f"{block}.{key}"] = redact_url(value) if key.endswith("_path") and isinstance(value, str) else value
    return flat


def _differences(before: dict | None, now: dict[str, object]) -> list[str]:
    if not isinstance(before, dict):
        return []
    return [f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in sorted(set(before) | set(now))
            if before.get(k) != now.get(k)]


def previous_outcome(cfg: JobConfig, *, fresh: bool) -> int | None:
    """What the volume says about this job: an exit code when it already ended (the pod stops
    without training again), None when it should run (first start, interrupted, or `fresh`)."""
    out, state = cfg.output_dir, read_state(cfg.output_dir)
    if fresh:
        dest = _archive(out)
        moved = f"the previous outputs were moved to {dest}" if dest else "nothing to move aside"
        log.info(f"fresh run (FRESH_RUN / --fresh): training job {cfg.job_id} from zero; {moved}")
        log.info("fresh run: unset FRESH_RUN after this run, or every restart of the pod trains from zero again")
        return None
    if state is None:
        return None
    if state.get("job_id") != cfg.job_id:
        log.info(f"job state: {out / STATE_FILE} belongs to job {state.get('job_id')!r}, not {cfg.job_id!r}; "
            "starting this job")
        return None
    status, when = state.get("status"), state.get("time")
    calls = cfg.platform or calls_from_raw_environment()
    progress = {"loss": state.get("loss"), "step": state.get("step"), "total_steps": state.get("total_steps")}
    if status == "completed":
        log.info(f"job {cfg.job_id} is already complete (finished {when}): the model is in {out / 'final'}, "
            f"its predictions in {cfg.predictions_path}; nothing to train")
        changed = _differences(state.get("settings"), settings(cfg))
        if changed:
            log.info(f"these settings differ from the finished run, and take effect only in a new one: {'; '.join(changed)}")
        log.info("to train it again from zero, set FRESH_RUN=1 (or run `entrypoint.py run --fresh`)")
        send_alert(calls, "job_completed", **progress)  # the pod still runs: the platform missed it
        return 0
    if status == "failed" and state.get("exit_code") in RECHECKED_ON_START:
        log.info(f"job {cfg.job_id} failed earlier before training (exit {state['exit_code']}, {when}): "
            f"{state.get('error')}; checking again")
        return None
    if status == "failed":
        code = int(state.get("exit_code") or 1)
        log.info(f"job {cfg.job_id} failed earlier (exit {code}, {when}): {state.get('error')}")
        log.info("not training it again (a restarted pod must not loop): fix the cause, then set FRESH_RUN=1 to start "
            f"from zero, or delete {out / STATE_FILE} to resume from the newest checkpoint")
        send_alert(calls, "job_failed", error=state.get("error"), **progress)
        return code
    checkpoint = newest_complete(out, quiet=True)
    if checkpoint is not None:
        log.info(f"job {cfg.job_id} was interrupted (state {status!r} since {when}, step {state.get('step')}); "
                 f"resuming from {checkpoint.name}")
    else:
        saving = (f"save_strategy is {cfg.training.save_strategy!r}" if cfg.training.save_strategy == "no"
                  else "none was complete yet")
        log.info(f"job {cfg.job_id} was interrupted (state {status!r} since {when}, step {state.get('step')}) and "
                 f"no checkpoint was saved ({saving}): training starts over from step 0; rounds already in the "
                 "spool are not predicted again")
    return None


def mark_running(cfg: JobConfig) -> None:
    """Before the training processes start: this attempt's state, no error yet."""
    previous = read_state(cfg.output_dir) or {}
    same = previous.get("job_id") == cfg.job_id
    write_state(cfg.output_dir, replace=True, job_id=cfg.job_id, status="running", exit_code=None, error=None,
                settings=settings(cfg),
                attempt=(previous.get("attempt", 0) + 1) if same else 1,
                **{k: previous[k] for k in ("step", "total_steps", "loss") if same and k in previous})


def finish(cfg: JobConfig, code: int, *, error: str | None = None) -> int:
    """After the attempt: the job's state on the volume, the Hub upload, and job_completed or
    job_failed. Returns the pod's exit code. SIGTERM / SIGINT (the pod being stopped) is an
    interruption, not a failure: the state stays running, so that a restart resumes."""
    state = read_state(cfg.output_dir) or {}
    progress = {"loss": state.get("loss"), "step": state.get("step"), "total_steps": state.get("total_steps")}
    calls = cfg.platform or calls_from_raw_environment()
    if code in STOPPED:
        log.info(f"job state: interrupted (exit {code}); still running on the volume: a restart resumes")
        return code
    if code == 0:
        upload_to_hub(cfg)
        write_state(cfg.output_dir, status="completed", exit_code=0, error=None)
        send_alert(calls, "job_completed", **progress)
        return 0
    error = scrub(error or state.get("error") or describe_exit(code))
    if error.startswith("disk full:"):
        code = EXIT_DISK_FULL  # the launcher turns a training process's own code into 1
    write_state(cfg.output_dir, job_id=cfg.job_id, status="failed", exit_code=code, error=error)
    log.info(f"job failed (exit {code}): {error}")
    send_alert(calls, "job_failed", error=error, **progress)
    return code


def config_failed(error: str) -> None:
    """The configuration did not parse: job_failed when the alert's own variables are there."""
    send_alert(calls_from_raw_environment(), "job_failed", error=scrub(f"configuration error: {error}"))
