"""The job's lifecycle with the platform: metrics and alerts to a double of the platform's routes,
the job's state on the volume (a finished or failed job is not trained again), progress lines."""

from __future__ import annotations

import json
import multiprocessing

import pytest
from pydantic import SecretStr

from tests.e2e import QUICK_TRAINING, job_env, run_entrypoint
from tests.env import set_job_env
from tests.platform_double import ALERT_PATH, METRICS_PATH, PlatformDouble
from tests.ports import refused_url
from trainer.checkpoints import MARKER, newest_complete
from trainer.child import child_main
from trainer.config.calls import PlatformCalls
from trainer.config.errors import ConfigError
from trainer.config.exits import EXIT_DISK_FULL, EXIT_UNAVAILABLE
from trainer.config.load import load_config
from trainer.pod.job import finish, mark_running, previous_outcome
from trainer.pod.platform import MetricsSender, metric_point, send_alert
from trainer.pod.state import read_state, record_failure, write_state
from trainer.progress import duration, next_round_step, progress_line
from trainer.redact import scrub

CANARY = "CANARY5e1b"
JOB = "9f0c4a52-1111-4222-8333-444455556666"
OWNER = "11111111-1111-4111-8111-111111111111"
TOKEN, KEY = f"{CANARY}-job-token", f"{CANARY}-internal-key"
TRAINING = {**QUICK_TRAINING, "max_steps": 20, "logging_steps": 5, "save_strategy": "no"}
PREDICTIONS = {"enabled": True, "sample_count": 3, "sample_frequency": "steps", "step_interval": 10,
               "max_new_tokens": 4}


def platform_env(out, metrics_url: str, alert_url: str, **values) -> dict[str, str]:
    return job_env(out, JOB_ID=JOB, USER_ID=OWNER, JOB_TOKEN=TOKEN, INTERNAL_API_KEY=KEY,
                   METRICS_API_URL=metrics_url, ALERT_API_URL=alert_url, **values)


def assert_no_secret(printed: str, out) -> None:
    assert CANARY not in printed
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert CANARY.encode() not in path.read_bytes(), path


@pytest.fixture
def platform():
    double = PlatformDouble(JOB, TOKEN, KEY, delay_s=0.5)  # a slow route: training must not wait for it
    yield double
    double.close()


@pytest.mark.slow
def test_a_run_sends_started_metrics_completed_and_a_rerun_says_it_is_complete(platform, tmp_path):
    out = tmp_path / "out"
    env = platform_env(out, platform.url + METRICS_PATH, platform.url + ALERT_PATH,
                       TRAINING_CONFIG=TRAINING, PREDICTIONS_CONFIG=PREDICTIONS,
                       HF_TOKEN=f"{CANARY}-hf", HF_REPO_NAME="someone/demo-model", HF_ENDPOINT=refused_url())
    proc = run_entrypoint(env)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-4000:]
    assert "platform metrics: on" in printed and "platform alerts: on" in printed
    assert platform.types() == ["job_started", "job_completed"], (platform.alerts, platform.refused)
    done = platform.alerts[1]
    assert done["job_id"] == JOB and done["user_id"] == OWNER and done["status"] == "completed"
    assert done["current_step"] == 20 and done["total_steps"] == 20 and done["progress"] == 100
    assert isinstance(done["loss"], float)
    points = platform.points()
    assert [p["step"] for p in points] == [5, 10, 15, 20], platform.refused
    assert all(p["train_loss"] > 0 and p["learning_rate"] > 0 and p["grad_norm"] is not None for p in points)
    assert all(p["samples_per_second"] > 0 and p["total_steps"] == 20 for p in points)
    assert not platform.refused
    # progress: a line per log step, with step / total and an ETA, and the next prediction round
    assert "progress: step 5/20 (25.0%)" in printed and "ETA" in printed
    assert "next prediction round at step 10" in printed
    assert "\r" not in printed
    # the Hub upload is attempted (against a refused endpoint here) and its failure is not fatal
    assert "hub upload: FAILED" in printed
    assert json.loads((out / "job_state.json").read_text())["status"] == "completed"
    assert_no_secret(printed, out)

    again = run_entrypoint(env, timeout=120)
    printed = again.stdout + again.stderr
    assert again.returncode == 0, printed[-3000:]
    assert f"job {JOB} is already complete" in printed and "FRESH_RUN=1" in printed
    assert "launch:" not in printed  # nothing trained
    assert platform.types()[-1] == "job_completed"  # the platform hears it again: it stops the pod


@pytest.mark.slow
def test_a_crash_in_the_training_process_sends_job_failed_and_a_restart_does_not_loop(platform, tmp_path):
    out = tmp_path / "out"
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()  # passes the configuration (it has a config.json), fails when the training process loads it
    (not_a_model / "config.json").write_text("{}\n")
    env = platform_env(out, platform.url + METRICS_PATH, platform.url + ALERT_PATH, MODEL_NAME=str(not_a_model),
                       DATASET_PATH=str(tmp_path / "train.jsonl"), TRAINING_CONFIG=TRAINING)
    (tmp_path / "train.jsonl").write_text('{"prompt": "a", "completion": "b"}\n' * 8)
    proc = run_entrypoint(env, timeout=300)
    printed = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 78), printed[-3000:]
    assert platform.types() == ["job_failed"], (platform.alerts, platform.refused)
    failed = platform.alerts[0]
    assert failed["status"] == "failed" and failed["error_message"].startswith("ValueError: ")
    assert failed["error_message"].splitlines()[0] in printed  # the exception the traceback ends with
    state = json.loads((out / "job_state.json").read_text())
    assert state["status"] == "failed" and state["exit_code"] == proc.returncode
    assert_no_secret(printed, out)

    again = run_entrypoint(env, timeout=120)
    printed = again.stdout + again.stderr
    assert again.returncode == proc.returncode
    assert f"job {JOB} failed earlier" in printed and "launch:" not in printed
    assert platform.types() == ["job_failed", "job_failed"]  # sent again: the platform stops the pod


@pytest.mark.slow
def test_bad_data_sends_job_failed_with_the_data_error(platform, tmp_path):
    (tmp_path / "train.jsonl").write_text('{"foo": 1}\n{"bar": 2}\n')  # no row in any accepted format
    env = platform_env(tmp_path / "out", platform.url + METRICS_PATH, platform.url + ALERT_PATH,
                       DATASET_PATH=str(tmp_path / "train.jsonl"), TRAINING_CONFIG=TRAINING)
    proc = run_entrypoint(env, timeout=300)
    assert proc.returncode == 78  # refused in the parent, before the model loads
    assert platform.types() == ["job_failed"], (platform.alerts, platform.refused)
    error = platform.alerts[0]["error_message"]
    assert error.startswith("data error: DATASET_PATH ") and "train.jsonl: no usable row" in error, error


@pytest.mark.slow
def test_a_metrics_endpoint_that_is_down_changes_nothing(platform, tmp_path):
    out = tmp_path / "out"
    env = platform_env(out, refused_url(METRICS_PATH), platform.url + ALERT_PATH,
                       TRAINING_CONFIG=TRAINING, PREDICTIONS_CONFIG=PREDICTIONS)
    proc = run_entrypoint(env)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-4000:]
    assert platform.types() == ["job_started", "job_completed"]
    assert platform.alerts[1]["current_step"] == 20
    assert "platform metrics: 0 points sent" in printed and "training goes on" in printed
    assert (out / "final").is_dir()
    assert_no_secret(printed, out)


def test_a_configuration_error_is_sent_as_job_failed(platform, tmp_path):
    env = platform_env(tmp_path / "out", platform.url + METRICS_PATH, platform.url + ALERT_PATH,
                       TRAINING_CONFIG={"learning_rate": "fast"})
    proc = run_entrypoint(env, timeout=120)
    assert proc.returncode == 78
    assert platform.types() == ["job_failed"]
    assert "TRAINING_CONFIG.learning_rate" in platform.alerts[0]["error_message"]
    assert CANARY not in proc.stdout + proc.stderr


@pytest.mark.parametrize(("values", "missing"), [
    ({"METRICS_API_URL": "http://x/api/training/local/metrics"}, "JOB_TOKEN"),
    ({"JOB_TOKEN": "t"}, "METRICS_API_URL"),
    ({"INTERNAL_API_KEY": "k"}, "ALERT_API_URL"),
    ({"ALERT_API_URL": "http://x/api/alerts/trigger", "JOB_ID": JOB}, "USER_ID"),
    ({"HF_REPO_NAME": "someone/model"}, "HF_TOKEN"),
])
def test_a_half_set_pair_is_a_configuration_error_naming_the_missing_one(monkeypatch, tmp_path, values, missing):
    set_job_env(monkeypatch, tmp_path, **values)
    with pytest.raises(ConfigError) as e:
        load_config()
    assert e.value.variable == missing


def config_for(monkeypatch, tmp_path, **values):
    set_job_env(monkeypatch, tmp_path, **values)
    return load_config()


@pytest.mark.parametrize(("code", "why"), [(77, "preflight: the key cannot insert"), (76, "migrations: 0002 failed")])
def test_a_refused_preflight_or_a_failed_migration_sends_job_failed(platform, monkeypatch, tmp_path, code, why,
                                                                     caplog):
    cfg = config_for(monkeypatch, tmp_path, JOB_ID=JOB, USER_ID=OWNER, ALERT_API_URL=platform.url + ALERT_PATH,
                     INTERNAL_API_KEY=KEY, METRICS_API_URL=platform.url + METRICS_PATH, JOB_TOKEN=TOKEN)
    mark_running(cfg)
    assert finish(cfg, code, error=why) == code
    assert platform.types() == ["job_failed"] and platform.alerts[0]["error_message"] == why
    caplog.clear()  # found before training: a rerun checks again (after a fix, it just runs)
    assert previous_outcome(cfg, fresh=False) is None
    assert any("failed earlier before training" in line and why in line for line in caplog.messages)
    # the documented switch starts over, the previous outputs (downloads too: the data may have
    # changed since) kept aside, never deleted
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "abc-train.jsonl").write_text("{}\n")
    assert previous_outcome(cfg, fresh=True) is None
    assert read_state(tmp_path)["attempt"] == 0 and list((tmp_path / "previous").glob("*/job_state.json"))
    assert not (tmp_path / "downloads").exists() and list((tmp_path / "previous").glob("*/downloads/abc-train.jsonl"))


def test_an_interrupted_attempt_resumes_and_another_jobs_state_is_not_this_ones(monkeypatch, tmp_path, caplog):
    cfg = config_for(monkeypatch, tmp_path, JOB_ID=JOB)
    mark_running(cfg)
    assert finish(cfg, 143) == 143  # SIGTERM: the pod was stopped
    caplog.clear()
    assert previous_outcome(cfg, fresh=False) is None  # no checkpoint: it says it starts over
    assert "was interrupted" in caplog.messages[0] and "no checkpoint was saved" in caplog.messages[0]
    assert "training starts over from step 0" in caplog.messages[0]
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / "COMPLETE").write_text("20\n")
    (tmp_path / "checkpoint-30").mkdir()  # torn: skipped
    caplog.clear()
    assert previous_outcome(cfg, fresh=False) is None
    assert "was interrupted" in caplog.messages[0] and "resuming from checkpoint-20" in caplog.messages[0]


def test_another_jobs_outputs_on_the_volume_are_moved_aside_never_resumed_replayed_or_deleted(
        monkeypatch, tmp_path, caplog):
    """Job B on job A's OUTPUT_DIR: A's checkpoint, spool, model and download are kept under
    previous/, B starts from zero on an empty volume, and the log says where A's things went."""
    write_state(tmp_path, job_id="job-a", status="completed", exit_code=0)
    for name in ("checkpoint-40/model.safetensors", "final/model.safetensors", "downloads/abc-train.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("A's\n")
    (tmp_path / "checkpoint-40" / MARKER).write_text("40\njob-a\n")
    (tmp_path / "predictions.jsonl").write_text('{"job_id": "job-a", "step": 40}\n')
    cfg = config_for(monkeypatch, tmp_path, JOB_ID="job-b")
    caplog.clear()
    assert previous_outcome(cfg, fresh=False) is None
    moved = next(line for line in caplog.messages if line.startswith("volume:"))
    assert "held job 'job-a'" in moved and "moved to" in moved
    kept = next((tmp_path / "previous").iterdir())
    assert kept.name.endswith("-job-a")
    assert {p.relative_to(kept).as_posix() for p in kept.rglob("*") if p.is_file()} == {
        "job_state.json", "checkpoint-40/model.safetensors", f"checkpoint-40/{MARKER}", "final/model.safetensors",
        "downloads/abc-train.jsonl", "predictions.jsonl"}
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["previous"]
    assert newest_complete(tmp_path, "job-b") is None
    # the last guard, in the training process: a marker naming another job is never resumed
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / MARKER).write_text("10\njob-a\n")
    assert newest_complete(tmp_path, "job-b") is None and newest_complete(tmp_path, "job-a").name == "checkpoint-10"
    assert "resume: skipping checkpoint-10: job 'job-a'" in caplog.messages[-1]


def test_fresh_run_left_set_starts_over_once_and_a_restart_resumes(monkeypatch, tmp_path, caplog):
    """FRESH_RUN=1 left in a template: the first start archives, a restart with it still set
    resumes (a completed job stays complete); one start without it re-arms it."""
    cfg = config_for(monkeypatch, tmp_path, JOB_ID=JOB, FRESH_RUN="1")
    write_state(tmp_path, job_id=JOB, status="completed", exit_code=0)
    assert previous_outcome(cfg, fresh=False) is None  # starts over
    assert len(list((tmp_path / "previous").iterdir())) == 1
    mark_running(cfg)
    (tmp_path / "checkpoint-10").mkdir()
    caplog.clear()
    assert previous_outcome(cfg, fresh=False) is None  # the pod restarted, FRESH_RUN still set: resumes
    assert (tmp_path / "checkpoint-10").exists() and len(list((tmp_path / "previous").iterdir())) == 1
    assert any("already started over on it" in line for line in caplog.messages)
    write_state(tmp_path, status="completed", exit_code=0)
    assert previous_outcome(cfg, fresh=False) == 0  # completed stays completed
    assert previous_outcome(config_for(monkeypatch, tmp_path, JOB_ID=JOB), fresh=False) == 0  # one start without it
    assert previous_outcome(cfg, fresh=False) is None  # set again: a new request
    assert len(list((tmp_path / "previous").iterdir())) == 2


@pytest.mark.parametrize(("code", "says"), [(EXIT_DISK_FULL, "a restart resumes"),
                                           (EXIT_UNAVAILABLE, "a restart tries again")])
def test_a_job_stopped_by_what_is_not_its_fault_resumes_on_restart(monkeypatch, tmp_path, caplog, code, says):
    """A full disk (74) or the Hub away (69): the message promises a retry, and the restart does
    resume instead of refusing as for a crash."""
    cfg = config_for(monkeypatch, tmp_path, JOB_ID=JOB)
    mark_running(cfg)
    error = None if code == EXIT_DISK_FULL else "MODEL_NAME: m could not be fetched ...; a restart tries again"
    assert finish(cfg, code, error=error) == code
    assert says in read_state(tmp_path)["error"]
    caplog.clear()
    assert previous_outcome(cfg, fresh=False) is None
    assert "resuming" in caplog.messages[-1]


def _write_many(args):
    out, key = args
    for i in range(250):
        write_state(out, **{key: i})


def test_job_state_updates_from_several_processes_are_never_lost(tmp_path):
    """The parent, the launcher and every rank merge fields into job_state.json: under its lock no
    process's update undoes another's."""
    keys = [f"k{i}" for i in range(4)]
    with multiprocessing.get_context("fork").Pool(len(keys)) as pool:
        pool.map(_write_many, [(tmp_path, k) for k in keys])
    state = read_state(tmp_path)
    assert {k: state.get(k) for k in keys} == dict.fromkeys(keys, 249)


def test_alerts_retry_transient_errors_and_not_a_refusal(monkeypatch, tmp_path, caplog):
    flaky = PlatformDouble(JOB, TOKEN, KEY, fail_first=1)
    try:
        cfg = config_for(monkeypatch, tmp_path, JOB_ID=JOB, USER_ID=OWNER, ALERT_API_URL=flaky.url + ALERT_PATH,
                         INTERNAL_API_KEY=KEY)
        assert send_alert(cfg.platform, "job_started")
        assert flaky.calls == 2 and flaky.types() == ["job_started"]  # a 503, then accepted
        wrong = PlatformCalls(**{**vars(cfg.platform), "alert_key": SecretStr("wrong")})
        assert not send_alert(wrong, "job_completed")
        assert flaky.calls == 3 and "job_completed FAILED: HTTP 401" in caplog.messages[-1]  # not retried
    finally:
        flaky.close()


def test_metrics_are_batched_and_put_never_waits_for_a_slow_route(monkeypatch, tmp_path):
    slow = PlatformDouble(JOB, TOKEN, KEY, delay_s=0.3)
    try:
        cfg = config_for(monkeypatch, tmp_path, JOB_ID=JOB, METRICS_API_URL=slow.url + METRICS_PATH, JOB_TOKEN=TOKEN)
        sender = MetricsSender(cfg.platform)
        for step in range(1, 31):
            sender.put(metric_point({"loss": 1.0 / step, "learning_rate": 1e-3, "epoch": 0.1},
                                              step=step, epoch=0.1, total_steps=30))
        summary = sender.close(timeout_s=30)
        assert [p["step"] for p in slow.points()] == list(range(1, 31))
        assert len(slow.metrics) < 30  # what queued during a slow call went in the next one
        assert "30 points sent" in summary and not slow.refused
    finally:
        slow.close()


def test_a_metric_point_has_the_routes_fields_and_skips_the_closing_summary():
    point = metric_point({"loss": 0.5, "grad_norm": float("nan"), "learning_rate": 1e-4, "epoch": 1.5},
                                   step=30, epoch=1.5, total_steps=60, samples_per_second=12.0)
    assert point["train_loss"] == 0.5 and point["grad_norm"] is None  # NaN is not JSON
    assert point["epoch"] == 1  # the integer epoch, as the platform's trainer sends it
    assert point["progress"] == 50 and point["samples_per_second"] == 12.0 and point["timestamp"].endswith("Z")
    assert metric_point({"eval_loss": 0.7}, step=30, epoch=1.5, total_steps=60)["perplexity"] > 1
    assert metric_point({"train_runtime": 3.0, "train_loss": 0.6}, step=60, epoch=2, total_steps=60) is None


def test_the_next_prediction_round_and_the_progress_line():
    assert next_round_step("steps", step=12, max_steps=100, steps_per_epoch=40, step_interval=10) == 20
    assert next_round_step("epoch", step=12, max_steps=100, steps_per_epoch=40) == 40
    assert next_round_step("epoch", step=85, max_steps=100, steps_per_epoch=40) == 100  # the last, short epoch
    assert next_round_step("eval", step=12, max_steps=100, steps_per_epoch=40, eval_strategy="steps", eval_steps=25) == 25
    assert next_round_step("steps", step=100, max_steps=100, steps_per_epoch=40, step_interval=10) is None
    line = progress_line(step=120, total=400, rate=2.0, loss=0.42131, next_round=150)
    assert line == ("progress: step 120/400 (30.0%), 2.00 steps/s, ETA 2m20s, loss 0.4213, "
                    "next prediction round at step 150")
    assert "ETA unknown" in progress_line(step=0, total=400, rate=None, loss=None)
    assert duration(3725) == "1h02m05s"


def test_a_training_process_error_reaches_the_parents_job_failed(platform, monkeypatch, tmp_path):
    import torch

    cfg = config_for(monkeypatch, tmp_path, JOB_ID=JOB, USER_ID=OWNER, ALERT_API_URL=platform.url + ALERT_PATH,
                     INTERNAL_API_KEY=KEY)
    mark_running(cfg)

    def main():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(torch.OutOfMemoryError):
        child_main(main)
    record_failure(tmp_path, "RuntimeError: connection closed by peer")  # another rank, after
    monkeypatch.setenv("JOB_TOKEN", TOKEN)
    assert scrub(f"401 for Bearer {TOKEN}") == "401 for Bearer <JOB_TOKEN>"  # an error quoting a secret
    assert finish(cfg, 1) == 1
    error = platform.alerts[-1]["error_message"]
    assert error.startswith("out of memory on the GPU: OutOfMemoryError: CUDA out of memory")  # the cause wins

    mark_running(cfg)  # the OOM killer leaves no exception behind: the exit code says it
    assert finish(cfg, 137) == 137
    assert "SIGKILL" in platform.alerts[-1]["error_message"] and platform.types() == ["job_failed"] * 2


def test_a_rerun_of_a_completed_job_names_the_settings_that_differ(monkeypatch, tmp_path, caplog):
    cfg = config_for(monkeypatch, tmp_path, JOB_ID=JOB)
    mark_running(cfg)
    assert finish(cfg, 0) == 0
    caplog.clear()
    assert previous_outcome(cfg, fresh=False) == 0
    assert not any("differ" in m for m in caplog.messages)  # the same settings: nothing to say
    changed = config_for(monkeypatch, tmp_path, JOB_ID=JOB, TRAINING_CONFIG={"learning_rate": 0.001})
    caplog.clear()
    assert previous_outcome(changed, fresh=False) == 0
    line = next(m for m in caplog.messages if "differ from the finished run" in m)
    assert "training.learning_rate: 0.002 → 0.001" in line and "predictions." not in line
