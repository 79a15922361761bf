"""The platform's launch (trainer/config/bootstrap.py): its bootstrap arguments in every form RunPod
may pass them, the job's configuration out of TRAINING_SCRIPT_B64 (embedded, or from the job's
row when the script as deployed embeds none), what is refused and how; and, through the
entrypoint as RunPod starts it, a real short training run from a real stored configuration."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import httpx
import pytest

from tests.e2e import job_env, run_entrypoint
from tests.platform_double import PlatformDouble
from tests.platform_launch import (
    ARGV,
    DOCKER_ARGS,
    POD_DATASET_PATH,
    ROUTE_ANON_KEY,
    STAND_IN_TRAINER,
    demo_job,
    deploy_env_vars,
    generate_training_config,
    gzipped_demo_rows,
    pod_environment,
    runpod_script,
    supabase_with_job,
)
from tests.postgrest_double import PostgrestDouble, serve
from trainer.config import bootstrap
from trainer.config.errors import ConfigError
from trainer.config.job import best_model
from trainer.config.load import load_config
from trainer.pod.job import place_for_platform
from trainer.pod.platform import BestModel

CORPUS = Path(__file__).parent / "platform_configs"
JOB, OWNER, CONFIG_ID = "5b3f6c1e-7a2d-4e8f-9c0b-1d2e3f4a5b6c", "11111111-1111-4111-8111-111111111111", "cfg-1"
CANARY = "CANARY7d2e"
TOKEN, KEY, HF = f"{CANARY}-job-token", f"{CANARY}-internal", f"hf_{CANARY}"
SERVICE_KEY = f"sb_secret_{CANARY}"


def stored(name: str = "stored_sft_predictions_eval.json") -> dict:
    return json.loads((CORPUS / name).read_text())


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("argv", [ARGV, [DOCKER_ARGS], DOCKER_ARGS.split(" ")],
                         ids=["shell-split", "one-string", "split-on-blanks"])
def test_the_bootstrap_arguments_are_recognised_in_every_form(argv):
    command = bootstrap.platform_command(argv)
    assert command == ('echo "$TRAINING_SCRIPT_B64" | base64 -d > /workspace/run_training.sh && chmod +x '
                       "/workspace/run_training.sh && /workspace/run_training.sh")
    assert bootstrap.platform_command(["run"]) is None and bootstrap.platform_command([]) is None
    assert bootstrap.platform_command([""]) is None  # an empty start command


@pytest.mark.parametrize("argv", [["bash", "-c", "rm -rf /workspace"], ["bash"], ["sh", "-x", "script.sh"]])
def test_another_shell_command_is_refused_naming_what_is_accepted(argv):
    with pytest.raises(bootstrap.UsageError) as info:
        bootstrap.platform_command(argv)
    assert "arguments not understood" in str(info.value) and "Accepted: run [--fresh], check" in str(info.value)
    assert bootstrap.PLATFORM_BOOTSTRAP in str(info.value)


def test_an_embedded_config_is_training_config_exactly(job_environ, tmp_path, monkeypatch):
    """The script as the builder's comments intend (config.json embedded) and the runpod-service form
    (a heredoc): both read as if TRAINING_CONFIG were the config.json; HF_TOKEN taken from the script."""
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n" for i in range(20)))
    config = generate_training_config("demo", POD_DATASET_PATH, stored())
    config["training"]["quantization"] = {}  # 4-bit weights need a GPU: refused on this machine's CPU
    embedded = runpod_script(config, HF, "wandb-key", JOB, as_deployed=False)
    heredoc = f"cat > /workspace/config.json << 'CONFIGEOF'\n{json.dumps(config, indent=2)}\nCONFIGEOF\n"
    for script in (embedded, heredoc):
        job_environ(DATASET_URL=str(data), JOB_ID=JOB, TRAINING_SCRIPT_B64=b64(script))
        read = bootstrap.read_script(os.environ)
        bootstrap.apply(read, os.environ)
        assert json.loads(os.environ["TRAINING_CONFIG"]) == config and "TRAINING_SCRIPT_B64" not in os.environ
        cfg = load_config()
        assert cfg.config_shape == "platform" and cfg.training.learning_rate == 1e-05
        # the builder's lora block comes from training.lora_config (r 16), not the stored top-level lora (r 32)
        assert cfg.training.finetuning == "lora" and cfg.training.lora.r == 16
        assert read.model_dir == "/workspace/fine_tuned_model"
    lines = "\n".join(bootstrap.describe(read, "cmd"))
    assert "config.json (/workspace/config.json) → TRAINING_CONFIG" in lines
    embedded_read = bootstrap.read_script({"TRAINING_SCRIPT_B64": b64(embedded)})
    ignored = "\n".join(embedded_read.ignored)
    assert "trl==0.26.0" in ignored and "torch==2.1.0" in ignored and f"standalone_trainer.py ({len(STAND_IN_TRAINER)} bytes)" in ignored
    assert "WANDB_API_KEY" in ignored and ".training_started" in ignored and "an hour after success" in ignored
    assert embedded_read.hf_token == HF and HF not in lines


def test_an_explicit_training_config_wins_and_the_report_says_so(job_environ):
    job_environ(TRAINING_CONFIG={"max_steps": 5}, TRAINING_SCRIPT_B64=b64(runpod_script(
        generate_training_config("demo", POD_DATASET_PATH, stored()), "", None, JOB, as_deployed=False)))
    read = bootstrap.read_script(os.environ)
    bootstrap.apply(read, os.environ)
    assert json.loads(os.environ["TRAINING_CONFIG"]) == {"max_steps": 5} and not read.config_used
    assert any("is NOT used: TRAINING_CONFIG is set, and an explicit variable wins" in line
               for line in bootstrap.describe(read, None))


@pytest.mark.parametrize(("value", "says"), [
    ("not base64 at all!", "TRAINING_SCRIPT_B64: not base64-encoded UTF-8 text"),
    (b64("#!/bin/bash\necho hello\n"), "TRAINING_SCRIPT_B64: the script embeds no config.json"),
    (b64(runpod_script({}, "", None, JOB)), "without SUPABASE_URL, SUPABASE_SERVICE_KEY"),
])
def test_a_script_that_cannot_be_read_is_a_configuration_error(value, says):
    with pytest.raises(ConfigError) as info:
        environ = {"TRAINING_SCRIPT_B64": value}
        bootstrap.apply(bootstrap.read_script(environ), environ)
    assert says in str(info.value)


def test_the_deployed_script_embeds_no_config_so_the_jobs_row_is_read():
    """As deployed, script-builder.ts escapes `${configBase64}`: the configuration is read from the
    job's row (local_training_jobs.config) with the service key; a missing row names the job."""
    config = stored()
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, dict(request.url.params), request.headers.get("apikey")))
        found = request.url.params.get("id") == f"eq.{JOB}"
        return httpx.Response(200, json=[{"config": config}] if found else [])

    server = serve(handler)
    try:
        environ = {"TRAINING_SCRIPT_B64": b64(runpod_script({}, "", None, JOB)), "SUPABASE_URL": server.url,
                   "SUPABASE_SERVICE_KEY": SERVICE_KEY, "JOB_ID": JOB}
        read = bootstrap.read_script(environ)
        bootstrap.apply(read, environ)
        assert json.loads(environ["TRAINING_CONFIG"]) == config
        assert seen == [("/rest/v1/local_training_jobs", {"select": "config", "id": f"eq.{JOB}"}, SERVICE_KEY)]
        assert "${configBase64}" in read.taken[0] and read.model_dir == "/workspace/fine_tuned_model"
        other = {**environ, "TRAINING_SCRIPT_B64": b64(runpod_script({}, "", None, "job-2")), "JOB_ID": "job-2"}
        other.pop("TRAINING_CONFIG")
        with pytest.raises(ConfigError, match="local_training_jobs.config of job 'job-2' from .*: no such job"):
            bootstrap.apply(bootstrap.read_script(other), other)
    finally:
        server.close()


def test_the_final_model_is_also_where_the_platform_leaves_it(tmp_path):
    out = tmp_path / "out"
    for name, files in (("final", ("adapter_model.safetensors", "tokenizer.json")), ("final-merged", ("model.safetensors",))):
        (out / name).mkdir(parents=True)
        for f in files:
            (out / name / f).write_text(f)
    place_for_platform(out, tmp_path / "fine_tuned_model")
    assert (tmp_path / "fine_tuned_model" / "tokenizer.json").read_text() == "tokenizer.json"
    assert (tmp_path / "fine_tuned_model" / "merged_model" / "model.safetensors").stat().st_nlink == 2  # a link
    place_for_platform(out, tmp_path / "absent" / "fine_tuned_model")  # no volume there: said, not created
    assert not (tmp_path / "absent").exists()


def test_platform_jobs_keep_the_best_checkpoint_as_the_platforms_trainer_does(job_environ, tmp_path, monkeypatch):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n" for i in range(20)))
    config = stored()
    config["training"].update(quantization={}, save_steps=75, eval_steps=50)
    job_environ(DATASET_URL=str(data), TRAINING_CONFIG=config)
    assert best_model(load_config()) == {"save_strategy": "steps", "save_steps": 50, "load_best_model_at_end": True,
                                         "metric_for_best_model": "eval_loss"}
    monkeypatch.setenv("TRAINING_CONFIG", json.dumps({"eval_split": 0.1, "eval_strategy": "steps", "eval_steps": 5}))
    assert best_model(load_config())["load_best_model_at_end"] is False  # this image's own keys: as set


def test_the_best_model_fields_follow_the_platforms_trainer():
    best = BestModel()
    assert best.update(step=10, epoch=0, loss=2.0, eval_loss=None)["loss_trend"] == "insufficient_data"
    best.update(step=20, epoch=0, loss=1.5, eval_loss=None)
    fields = best.update(step=30, epoch=1, loss=1.0, eval_loss=1.2)
    assert fields == {"loss_trend": "improving", "best_eval_loss": 1.2, "best_epoch": 1, "best_step": 30,
                      "epochs_without_improvement": 0}
    fields = best.update(step=40, epoch=1, loss=None, eval_loss=1.3)  # worse: no new best, no improvement
    assert (fields["best_step"], fields["epochs_without_improvement"]) == (30, 1)


@pytest.mark.slow
def test_the_platforms_pod_request_trains_the_job(tmp_path):
    """RunPod's start of this image for the platform: the deploy route's dockerArgs as the arguments,
    its environment (TRAINING_SCRIPT_B64 built as its script builder builds it, as deployed, so
    without the configuration), the job's row holding a real stored configuration (shrunk for a
    CPU), the platform's routes and the Supabase API as doubles."""
    config = demo_job(stored())
    data = gzipped_demo_rows(tmp_path / "dataset.jsonl.gz", 200)
    table = PostgrestDouble()
    database = supabase_with_job(table, job_id=JOB, service_key=SERVICE_KEY, config=config)
    platform = PlatformDouble(JOB, TOKEN, KEY)
    try:
        script = runpod_script(generate_training_config("demo", POD_DATASET_PATH, config), HF, None, JOB)
        env = job_env(tmp_path / "out", **pod_environment(script, training_config_id=CONFIG_ID, env_vars=deploy_env_vars(
            job_id=JOB, job_token=TOKEN, user_id=OWNER, supabase_url=database.url, anon_key=ROUTE_ANON_KEY,
            service_key=SERVICE_KEY, dataset_url=str(data), model_name="demo", app_url=platform.url,
            internal_api_key=KEY)))
        proc = run_entrypoint(env, *ARGV)
    finally:
        database.close()
        platform.close()
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-4000:]
    assert "platform launch: started with the platform's bootstrap arguments" in printed
    assert "TRAINING_CONFIG is the job's own, read from the platform's database" in printed
    assert "platform launch: ignored: its pip installs (" in printed and "HF_TOKEN (its export line" in printed
    assert "final model: the best evaluation checkpoint by eval_loss" in printed
    assert "platform model folder: /workspace/fine_tuned_model not written: OUTPUT_DIR is not on /workspace" in printed
    # predictions from the configuration's own block (5 samples, after each evaluation) and the demo's baseline
    assert sorted({r["step"] for r in table.rows}) == [0, 6, 12] and len(table.rows) == 15
    assert {r["job_id"] for r in table.rows} == {JOB} and {r["user_id"] for r in table.rows} == {OWNER}
    assert platform.types() == ["job_started", "job_completed"], (platform.alerts, platform.refused)
    points = platform.points()
    assert [p["step"] for p in points if p["train_loss"] is not None] == [6, 12]
    assert all(isinstance(p["epoch"], int) for p in points)
    evals = [p for p in points if p["eval_loss"] is not None]
    assert evals and all(p["best_step"] in (6, 12) and p["best_eval_loss"] is not None for p in evals)
    assert CANARY not in printed  # the job token, the internal key, the service key, the HF token in the script
    for path in (p for p in (tmp_path / "out").rglob("*") if p.is_file()):
        assert CANARY.encode() not in path.read_bytes(), path


def test_unknown_arguments_are_one_line_naming_what_is_accepted(tmp_path):
    proc = run_entrypoint(job_env(tmp_path / "out"), "chek", timeout=120)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 64, printed
    assert "usage error: argument command: invalid choice: 'chek'" in printed and "Accepted: run [--fresh]" in printed
    assert "usage:" not in printed and "Traceback" not in printed


def test_an_unreadable_script_in_the_platforms_launch_is_78_with_job_failed(tmp_path):
    platform = PlatformDouble(JOB, TOKEN, KEY)
    try:
        env = job_env(tmp_path / "out", TRAINING_SCRIPT_B64="not base64 at all!", JOB_ID=JOB, USER_ID=OWNER,
                      ALERT_API_URL=platform.url + "/api/alerts/trigger", INTERNAL_API_KEY=KEY)
        proc = run_entrypoint(env, *ARGV, timeout=120)
    finally:
        platform.close()
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 78, printed
    assert "configuration error: TRAINING_SCRIPT_B64: not base64-encoded UTF-8 text" in printed
    assert platform.types() == ["job_failed"]
    assert "TRAINING_SCRIPT_B64: not base64" in platform.alerts[0]["error_message"]


def test_a_bad_configuration_in_the_jobs_row_is_78_naming_its_keys_with_job_failed(tmp_path):
    """The configuration read for a platform launch is checked exactly as TRAINING_CONFIG is."""
    table, platform = PostgrestDouble(), PlatformDouble(JOB, TOKEN, KEY)
    database = supabase_with_job(table, job_id=JOB, service_key=SERVICE_KEY, config=stored("several_mistakes.json"))
    try:
        env = job_env(tmp_path / "out", **pod_environment(runpod_script({}, "", None, JOB), training_config_id=CONFIG_ID,
                      env_vars=deploy_env_vars(job_id=JOB, job_token=TOKEN, user_id=OWNER, supabase_url=database.url,
                                               anon_key=ROUTE_ANON_KEY, service_key=SERVICE_KEY,
                                               dataset_url=str(gzipped_demo_rows(tmp_path / "d.jsonl.gz", 20)),
                                               model_name="demo", app_url=platform.url, internal_api_key=KEY)))
        proc = run_entrypoint(env, *ARGV, timeout=120)
    finally:
        database.close()
        platform.close()
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 78, printed[-3000:]
    assert "TRAINING_CONFIG.training.quantization: load_in_4bit and load_in_8bit are both true" in printed
    assert "(TRAINING_CONFIG here is the platform launch's: no configuration: its config.json line decodes" in printed
    assert platform.types() == ["job_failed"] and "load_in_4bit" in platform.alerts[0]["error_message"]
    assert CANARY not in printed
