"""The job's lifecycle with the platform: metrics and alerts to a double of the platform's routes,
the job's state on the volume (a finished or failed job is not trained again), progress lines."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from tests.e2e import QUICK_TRAINING, job_env, run_entrypoint
from tests.env import set_job_env
from tests.platform_double import ALERT_PATH, METRICS_PATH, PlatformDouble
from tests.ports import refused_url
from trainer.child import child_main
from trainer.config.calls import PlatformCalls
from trainer.config.errors import ConfigError
from trainer.config.load import load_config
from trainer.pod.job import finish, mark_running, previous_outcome
from trainer.pod.platform import MetricsSender, metric_point, send_alert
from trainer.pod.state import record_failure, write_state
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
    not_a_model.mkdir()  # passes the configuration, fails when the training process loads it
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
    # the documented switch starts over, the previous outputs kept aside, the downloaded data in place
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "abc-train.jsonl").write_text("{}\n")
    assert previous_outcome(cfg, fresh=True) is None
    assert not (tmp_path / "job_state.json").exists() and list((tmp_path / "previous").glob("*/job_state.json"))
    assert (tmp_path / "downloads" / "abc-train.jsonl").exists()


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
    write_state(tmp_path, job_id="another-job", status="completed")
    assert previous_outcome(cfg, fresh=False) is None
    assert "belongs to job 'another-job'" in caplog.messages[-1]


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
