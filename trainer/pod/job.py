"""The job across pod starts: what the volume says about it before training (ended: stop without
training again; interrupted: resume; `fresh`: archive and start over), its state while it runs,
and its end (the state, the Hub upload, job_completed or job_failed)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from trainer.child import disk_full_message
from trainer.config.calls import calls_from_raw_environment
from trainer.config.exits import EXIT_DISK_FULL, EXIT_KILLED, RECHECKED_ON_START, RESUMED_ON_START, STOPPED
from trainer.config.job import JobConfig
from trainer.pod.hub import upload_to_hub
from trainer.pod.platform import send_alert
from trainer.pod.state import STATE_FILE, newest_complete, read_state, write_state
from trainer.pod.volume import claim
from trainer.redact import redact_url, scrub

log = logging.getLogger(__name__)


def describe_exit(code: int, output_dir: Path) -> str:
    if code == EXIT_DISK_FULL:  # the process could not even record its own message
        return disk_full_message(output_dir)
    if code == EXIT_KILLED:
        return ("the training processes were killed (SIGKILL): on a pod, usually the kernel's out-of-memory killer "
                "(host RAM); a smaller batch or fewer dataloader workers helps")
    return f"a training process exited with code {code}; its error is in the pod's log above"


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


def previous_outcome(cfg: JobConfig, *, fresh: bool, primary: bool = True) -> int | None:
    """What the volume says about this job: an exit code when it already ended (the pod stops
    without training again), None when it should run (first start, interrupted, `--fresh`, or
    FRESH_RUN once). Another job's outputs are moved aside first (trainer/pod/volume.py).
    `primary` False (a cluster's other nodes): the alert is node 0's to send, not this node's."""
    out = cfg.output_dir
    if claim(out, cfg.job_id, fresh=fresh, fresh_env=cfg.env.FRESH_RUN):
        return None
    state = read_state(out)
    if state is None:
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
        if primary:
            send_alert(calls, "job_completed", **progress)  # the pod still runs: the platform missed it
        return 0
    if status == "failed" and state.get("exit_code") in RESUMED_ON_START:
        log.info(f"job {cfg.job_id} stopped earlier on something that is not the job's own fault (exit "
            f"{state['exit_code']}, {when}): {state.get('error')}; resuming")
        return None
    if status == "failed" and state.get("exit_code") in RECHECKED_ON_START:
        log.info(f"job {cfg.job_id} failed earlier before training (exit {state['exit_code']}, {when}): "
            f"{state.get('error')}; checking again")
        return None
    if status == "failed":
        code = int(state.get("exit_code") or 1)
        log.info(f"job {cfg.job_id} failed earlier (exit {code}, {when}): {state.get('error')}")
        log.info("not training it again (a restarted pod must not loop): fix the cause, then set FRESH_RUN=1 to start "
            f"from zero, or delete {out / STATE_FILE} to resume from the newest checkpoint")
        if primary:
            send_alert(calls, "job_failed", error=state.get("error"), **progress)
        return code
    checkpoint = newest_complete(out, cfg.job_id, quiet=True)
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
                **{k: previous[k] for k in ("step", "total_steps", "loss", "fresh_run") if same and k in previous})


def finish(cfg: JobConfig, code: int, *, error: str | None = None, primary: bool = True) -> int:
    """After the attempt: the job's state on the volume, the Hub upload, and job_completed or
    job_failed. Returns the pod's exit code. SIGTERM / SIGINT (the pod being stopped) is an
    interruption, not a failure: the state stays running, so that a restart resumes. `primary`
    False (a cluster's other nodes): this node's state only; node 0 uploads and sends the one alert."""
    state = read_state(cfg.output_dir) or {}
    progress = {"loss": state.get("loss"), "step": state.get("step"), "total_steps": state.get("total_steps")}
    calls = cfg.platform or calls_from_raw_environment()
    if code in STOPPED:
        log.info(f"job state: interrupted (exit {code}); still running on the volume: a restart resumes")
        return code
    if code == 0:
        if primary:
            upload_to_hub(cfg)
        write_state(cfg.output_dir, status="completed", exit_code=0, error=None)
        if primary:
            send_alert(calls, "job_completed", **progress)
        return 0
    error = scrub(error or state.get("error") or describe_exit(code, cfg.output_dir))
    if error.startswith("disk full:"):
        code = EXIT_DISK_FULL  # the launcher turns a training process's own code into 1
    write_state(cfg.output_dir, job_id=cfg.job_id, status="failed", exit_code=code, error=error)
    log.info(f"job failed (exit {code}): {error}")
    if primary:
        send_alert(calls, "job_failed", error=error, **progress)
    else:
        log.info("job_failed: sent by node 0 (the primary), not by this node")
    return code


#: final/ and final-merged/ under the names the platform's trainer uses in its output_dir.
PLATFORM_LAYOUT = (("final", ""), ("final-merged", "merged_model"))


def place_for_platform(output_dir: Path, model_dir: Path) -> None:
    """The final model also where the platform's pod leaves it (its config.json's output_dir,
    /workspace/fine_tuned_model): hard links (no second copy on the volume; a copy across
    devices). Only when that folder's parent exists (the volume is mounted); never fatal."""
    if not model_dir.parent.is_dir():
        log.info(f"platform model folder: {model_dir} not written: {model_dir.parent} does not exist here "
                 f"(the model is in {output_dir / 'final'})")
        return
    placed = 0
    try:
        for source_name, target_name in PLATFORM_LAYOUT:
            source = output_dir / source_name
            if not source.is_dir() or source.resolve() == model_dir.resolve():
                continue
            for path in (p for p in source.rglob("*") if p.is_file()):
                target = model_dir / target_name / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.unlink(missing_ok=True)
                try:
                    os.link(path, target)
                except OSError:  # another device, or links not supported
                    shutil.copy2(path, target)
                placed += 1
    except OSError as e:
        log.info(f"platform model folder: FAILED to fill {model_dir} ({e}); the model is in {output_dir / 'final'}")
        return
    log.info(f"platform model folder: {placed} files of {output_dir / 'final'} also in {model_dir}, where the "
             "platform's pod leaves its model")


def config_failed(error: str) -> None:
    """The configuration did not parse: job_failed when the alert's own variables are there."""
    send_alert(calls_from_raw_environment(), "job_failed", error=scrub(f"configuration error: {error}"))
