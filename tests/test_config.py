"""Configuration parsing: every bad input stops with the variable, the key and what is accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.env import job_env, set_job_env
from trainer.config.errors import ConfigError
from trainer.config.exits import EXIT_CONFIG
from trainer.config.job import expected_rounds
from trainer.config.load import load_config
from trainer.config.schema import MAX_SAMPLE_COUNT

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(job_environ, monkeypatch, tmp_path):
    """A clean environment with a small real dataset; returns a setter."""
    job_environ()
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")

    def set_(**values):
        set_job_env(monkeypatch, None, clear=(), **values)  # on top of what is set: nothing cleared
        return load_config

    set_.data = str(data)
    return set_


def error_of(load) -> str:
    with pytest.raises(ConfigError) as info:
        load()
    return str(info.value)


def test_nothing_set_is_the_demo_with_predictions_every_epoch(env):
    cfg = env()()
    assert cfg.is_demo and cfg.storage == "local"
    assert cfg.predictions.enabled and cfg.predictions.sample_frequency == "epoch"
    assert cfg.training.eval_strategy == "epoch" and cfg.eval_dataset_path
    assert "SUPABASE_URL is not set" in cfg.storage_reason


def test_defaults_outside_the_demo(env):
    cfg = env(MODEL_NAME="some/model", DATASET_PATH=env.data)()
    # nothing said about predictions: a small fixed sample at each epoch end (the image's point)
    assert cfg.predictions.enabled and cfg.predictions.sample_count == 8 and cfg.predictions_source == "default"
    assert cfg.predictions.sample_frequency == "epoch"
    off = env(MODEL_NAME="some/model", DATASET_PATH=env.data, PREDICTIONS_CONFIG={"enabled": False})()
    assert not off.predictions.enabled
    assert cfg.training.eval_strategy == "no"  # no evaluation data
    assert cfg.training.learning_rate == 2e-5


def test_empty_variables_mean_unset(env):
    cfg = env(NUM_PROCESSES="", JOB_ID="", SUPABASE_URL="")()
    assert cfg.num_processes is None and cfg.storage == "local"


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("TRAINING_CONFIG", "{bad", "TRAINING_CONFIG: malformed JSON at line 1 column 2"),
        ("TRAINING_CONFIG", '{\n "epochs": 3,\n}', "TRAINING_CONFIG: malformed JSON at line 3 column 1"),
        ("TRAINING_CONFIG", "[1]", "TRAINING_CONFIG: must be a JSON object"),
        ("TRAINING_CONFIG", {"epochs": 3}, "TRAINING_CONFIG.epochs: unknown key"),
        ("TRAINING_CONFIG", {"lora": {"rank": 3}}, "TRAINING_CONFIG.lora.rank: unknown key; accepted: r, alpha"),
        ("TRAINING_CONFIG", {"learning_rate": "fast"}, "TRAINING_CONFIG.learning_rate: Input should be a valid number"),
        ("TRAINING_CONFIG", {"learning_rate": -1}, "TRAINING_CONFIG.learning_rate: Input should be greater than 0 (got -1)"),
        ("TRAINING_CONFIG", {"finetuning": "dora"}, "TRAINING_CONFIG.finetuning: Input should be 'full', 'lora' or 'qlora'"),
        ("TRAINING_CONFIG", {"eval_strategy": "steps"}, "TRAINING_CONFIG.eval_steps"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "sample_count": 0}, "PREDICTIONS_CONFIG.sample_count: must be at least 1 when predictions are enabled (got 0)"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "sample_count": MAX_SAMPLE_COUNT + 1}, f"less than or equal to {MAX_SAMPLE_COUNT}"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "sample_frequency": "hourly"}, "PREDICTIONS_CONFIG.sample_frequency: Input should be 'eval', 'epoch' or 'steps' (got 'hourly')"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "sample_frequency": "steps"}, "PREDICTIONS_CONFIG.step_interval: must be a positive integer"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "sample_frequency": "steps", "step_interval": 0}, "PREDICTIONS_CONFIG.step_interval"),
        ("PREDICTIONS_CONFIG", {"enabled": "yes please"}, "PREDICTIONS_CONFIG.enabled: Input should be a valid boolean"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "samples_path": "/nope.jsonl"}, "PREDICTIONS_CONFIG.samples_path: file not found"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "frequency": "epoch"}, "PREDICTIONS_CONFIG.frequency: unknown key"),
        ("DATASET_PATH", "/nope.jsonl", "DATASET_PATH: file not found: '/nope.jsonl'"),
        ("NUM_PROCESSES", "two", "NUM_PROCESSES: Input should be a valid integer"),
    ],
)
def test_bad_input_names_variable_key_and_what_is_accepted(env, variable, value, expected):
    base = {"MODEL_NAME": "m", "DATASET_PATH": env.data}
    assert expected in error_of(env(**{**base, variable: value}))


def test_eval_frequency_without_evaluation_says_how_to_fix(env):
    msg = error_of(env(MODEL_NAME="m", DATASET_PATH=env.data, PREDICTIONS_CONFIG={"enabled": True, "sample_frequency": "eval"}))
    assert msg.startswith("PREDICTIONS_CONFIG.sample_frequency")
    assert "there is no evaluation data" in msg and 'choose "epoch"' in msg
    msg = error_of(env(EVAL_DATASET_PATH=env.data, TRAINING_CONFIG={"eval_strategy": "no"}))
    assert "evaluation is off" in msg


def test_dataset_required_outside_the_demo(env):
    assert error_of(env(MODEL_NAME="my/model")).startswith("DATASET_PATH: not set")


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"SUPABASE_ANON_KEY": "x"}, "the anon key cannot insert under RLS; set SUPABASE_SERVICE_KEY"),
        ({"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_ANON_KEY": "x"}, "the anon key cannot insert under RLS"),
        ({"SUPABASE_URL": "https://x.supabase.co"}, "missing SUPABASE_SERVICE_KEY"),
        ({"SUPABASE_SERVICE_KEY": "sb_secret_x"}, "missing SUPABASE_URL"),
        ({"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_KEY": "sb_secret_x"}, "JOB_ID: not set"),
        ({"SUPABASE_DB_URL": "postgresql://u:p@h/db", "JOB_ID": "job-1", "USER_ID": "me"}, "USER_ID: must be a UUID"),
    ],
)
def test_half_configured_database_mode_is_refused(env, values, expected):
    assert expected in error_of(env(**values))


def test_database_modes(env):
    ids = {"JOB_ID": "6f1c1f0e-4a55-4f1a-9e43-9a3f3b7c1d10", "USER_ID": "0b7c6f4e-1d2a-4c3b-8e9f-1a2b3c4d5e6f"}
    cfg = env(SUPABASE_URL="https://x.supabase.co", SUPABASE_SERVICE_KEY="sb_secret_abc", **ids)()
    assert cfg.storage == "supabase"
    assert "sb_secret_abc" not in repr(cfg)  # secrets print as '**********'
    cfg = env(SUPABASE_URL="", SUPABASE_SERVICE_KEY="", SUPABASE_DB_URL="postgresql://u:pw@h/db")()
    assert cfg.storage == "postgres" and "pw" not in repr(cfg.secrets)


def test_expected_rounds(env):
    cfg = env(MODEL_NAME="m", DATASET_PATH=env.data, TRAINING_CONFIG={"num_train_epochs": 2, "per_device_train_batch_size": 10},
              PREDICTIONS_CONFIG={"enabled": True, "sample_frequency": "steps", "step_interval": 5, "baseline": True})()
    assert expected_rounds(cfg, 100) == 1 + 20 // 5
    assert expected_rounds(cfg, 100, processes=2) == 1 + 10 // 5


def test_entrypoint_exits_with_the_config_code_before_loading_anything(tmp_path):
    env = job_env(tmp_path / "out", TRAINING_CONFIG='{"learning_rate": "fast"}')
    code = "import entrypoint, sys; rc = entrypoint.main([]); assert 'torch' not in sys.modules; sys.exit(rc)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_CONFIG, proc.stdout + proc.stderr
    assert "configuration error: TRAINING_CONFIG.learning_rate: Input should be a valid number" in proc.stdout
    assert not (tmp_path / "out").exists()  # nothing was produced


def test_sharded_strategies_that_cannot_generate_are_refused_up_front_naming_the_alternative(env, monkeypatch):
    predictions = {"enabled": True}
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert env(PREDICTIONS_CONFIG=predictions)().predictions.enabled  # FSDP2 (the default) generates in lockstep
    monkeypatch.setenv("FSDP_VERSION", "1")
    error = error_of(env(PREDICTIONS_CONFIG=predictions))
    assert error.startswith("FSDP_VERSION: predictions need FSDP2, got '1'") and "Set FSDP_VERSION=2" in error
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "1")
    error = error_of(env(PREDICTIONS_CONFIG=predictions))
    assert error.startswith("ACCELERATE_USE_DEEPSPEED: DeepSpeed is not installed") and "Use FSDP instead" in error
    assert not env(PREDICTIONS_CONFIG={"enabled": False})().predictions.enabled  # training alone is not refused


def test_every_problem_is_reported_at_once(tmp_path):
    """Several mistakes in several variables: one message naming each, exit 78, nothing loaded."""
    env = job_env(
        tmp_path / "out", MODEL_NAME="my/model", DATASET_PATH="/nope.jsonl",
        TRAINING_CONFIG='{"learning_rate": "fast", "epochs": 3, "lr_scheduler_type": "cosine_annealing"}',
        PREDICTIONS_CONFIG='{"enabled": true, "sample_count": 0, "sample_frequency": "hourly"}',
        SUPABASE_URL="https://x.supabase.co", NUM_PROCESSES="two",
    )
    code = "import entrypoint, sys; rc = entrypoint.main([]); assert 'torch' not in sys.modules; sys.exit(rc)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_CONFIG, proc.stdout + proc.stderr
    out = proc.stdout
    assert "configuration error: 8 problems:" in out, out
    for part in (
        "  - TRAINING_CONFIG.learning_rate: Input should be a valid number",
        "  - TRAINING_CONFIG.epochs: unknown key; accepted: num_train_epochs, max_steps",
        "  - TRAINING_CONFIG.lr_scheduler_type: Input should be 'linear', 'cosine', 'cosine_with_restarts'",
        "  - PREDICTIONS_CONFIG.sample_frequency: Input should be 'eval', 'epoch' or 'steps' (got 'hourly')",
        "  - DATASET_PATH: file not found: '/nope.jsonl'",
        "database mode is half-configured: missing SUPABASE_SERVICE_KEY",
        "  - NUM_PROCESSES: Input should be a valid integer, unable to parse string as an integer (got 'two'); "
        "accepted: a whole number",
        "  - PREDICTIONS_CONFIG.sample_count: must be at least 1 when predictions are enabled (got 0)",
    ):
        assert part in out, out
    assert not (tmp_path / "out").exists()


def test_config_error_keeps_the_first_problems_variable_and_key(env):
    with pytest.raises(ConfigError) as info:
        env(MODEL_NAME="m", DATASET_PATH=env.data, TRAINING_CONFIG={"lora": {"rank": 1}, "seed": "x"})()
    e = info.value
    assert (e.variable, e.key) == ("TRAINING_CONFIG", "seed") or (e.variable, e.key) == ("TRAINING_CONFIG", "lora.rank")
    assert {p.key for p in e.problems} == {"seed", "lora.rank"}


@pytest.mark.parametrize("value", ["'{\"a\": 1}'", '"{"a": 1}"', '"{\\"enabled\\": true}"'])
def test_quoted_json_from_an_env_file_gets_a_hint(env, value):
    msg = error_of(env(PREDICTIONS_CONFIG=value))
    assert msg.startswith("PREDICTIONS_CONFIG: ") and "wrapped in quotes" in msg and "remove the outer quotes" in msg


def test_a_disabled_predictions_block_is_valid_whatever_its_sample_count(env):
    cfg = env(MODEL_NAME="m", DATASET_PATH=env.data,
              PREDICTIONS_CONFIG={"enabled": False, "sample_count": 0, "sample_frequency": "epoch"})()
    assert not cfg.predictions.enabled


@pytest.mark.parametrize("schema", [{"type": "object", "required": ["answer"]},
                                    json.dumps({"type": "object", "required": ["answer"]})])
def test_an_inline_json_schema_works_like_a_schema_file(env, tmp_path, schema):
    cfg = env(PREDICTIONS_CONFIG={"enabled": True, "validators": {"json_parse": True, "json_schema": schema}})()
    assert cfg.json_schema == {"type": "object", "required": ["answer"]}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "object"}))
    assert env(PREDICTIONS_CONFIG={"enabled": True, "validators": {"json_schema_path": str(path)}})().json_schema == {"type": "object"}
    msg = error_of(env(PREDICTIONS_CONFIG={"enabled": True, "validators": {"json_schema": schema, "json_schema_path": str(path)}}))
    assert "PREDICTIONS_CONFIG.validators: set json_schema (inline) or json_schema_path, not both" in msg
    msg = error_of(env(PREDICTIONS_CONFIG={"enabled": True, "validators": {"json_schema": "{not json"}}))
    assert "PREDICTIONS_CONFIG.validators.json_schema: the inline schema is not valid JSON" in msg


def test_job_id_is_any_text_and_user_id_a_uuid_in_database_mode(env):
    owner = "0b7c6f4e-1d2a-4c3b-8e9f-1a2b3c4d5e6f"
    cfg = env(SUPABASE_DB_URL="postgresql://u:p@h/db", JOB_ID="job_abc123", USER_ID=owner)()
    assert cfg.job_id == "job_abc123" and cfg.user_id == owner
    assert "USER_ID: must be a UUID" in error_of(env(USER_ID="alice"))
    assert "JOB_ID: is blank" in error_of(env(JOB_ID="  ", USER_ID=owner))


def test_dataset_url_is_the_platforms_name_for_dataset_path(env):
    cfg = env(MODEL_NAME="m", DATASET_URL=env.data)()
    assert cfg.dataset_path == env.data
    assert env(MODEL_NAME="m", DATASET_URL=env.data, DATASET_PATH=env.data)().dataset_path == env.data
    msg = error_of(env(MODEL_NAME="m", DATASET_URL="https://x/a.jsonl.gz?token=1", DATASET_PATH=env.data))
    assert msg.startswith("DATASET_URL: differs from DATASET_PATH")
    assert "DATASET_PATH: not set (nor DATASET_URL)" in error_of(env(MODEL_NAME="m", DATASET_URL="", DATASET_PATH=""))


def test_user_keys_override_only_the_defaults_they_name(env):
    cfg = env(TRAINING_CONFIG={"max_steps": 5}, PREDICTIONS_CONFIG={"sample_count": 3})()
    assert cfg.training.max_steps == 5 and cfg.training.learning_rate == 2e-3  # the demo's, kept
    assert cfg.training.per_device_train_batch_size == 32 and cfg.predictions.enabled  # demo's too
    assert cfg.training_sources["max_steps"] == "TRAINING_CONFIG" and cfg.training_sources["learning_rate"] == "demo"
    assert cfg.predictions.sample_count == 3 and cfg.predictions.max_new_tokens == 32


def test_evaluation_defaults_follow_the_data(env):
    cfg = env(DATASET_PATH=env.data)()  # the demo model on the user's data, which has no evaluation file
    assert cfg.is_demo and cfg.eval_dataset_path is None and cfg.training.eval_strategy == "no"
    assert env(DATASET_PATH="")().training.eval_strategy == "epoch"  # the bundled data has an evaluation file


def test_output_dir_and_hf_home_keep_the_images_defaults_when_empty(env, monkeypatch):
    monkeypatch.setenv("IMAGE_OUTPUT_DIR", "/workspace/outputs")
    monkeypatch.setenv("IMAGE_HF_HOME", "/workspace/hf")
    monkeypatch.setenv("HF_HOME", "")
    cfg = env(OUTPUT_DIR="")()
    assert str(cfg.output_dir) == "/workspace/outputs" and "IMAGE_OUTPUT_DIR" in cfg.output_dir_source
    assert os.environ["HF_HOME"] == "/workspace/hf"
    monkeypatch.setenv("HF_HOME", "/mine")
    assert str(env(OUTPUT_DIR="/data/out")().output_dir) == "/data/out" and os.environ["HF_HOME"] == "/mine"


def test_scheduler_and_optimizer_lists_are_transformers_own():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from trainer.config.schema import OPTIMIZERS, SCHEDULER_TYPES

    assert set(SCHEDULER_TYPES) == {s.value for s in SchedulerType}
    assert set(OPTIMIZERS) == {o.value for o in OptimizerNames}


def test_keys_left_unset_are_transformers_own_defaults(env):
    """Not naming a key changes nothing: what the image passes by default is what transformers uses."""
    from transformers import TrainingArguments

    from trainer.config.schema import TrainingConfig
    from trainer.train import training_arguments

    defaults = TrainingArguments(output_dir="x")
    args = training_arguments(env(MODEL_NAME="m", DATASET_PATH=env.data)())
    for name in ("optim", "adam_beta1", "adam_beta2", "adam_epsilon", "lr_scheduler_type", "lr_scheduler_kwargs",
                 "dataloader_num_workers", "dataloader_prefetch_factor", "train_sampling_strategy",
                 "load_best_model_at_end", "metric_for_best_model", "weight_decay", "max_grad_norm"):
        assert getattr(args, name) == getattr(defaults, name), name
    assert TrainingConfig().optim == defaults.optim


def test_an_optimizer_whose_package_is_missing_is_refused_up_front(env):
    msg = error_of(env(TRAINING_CONFIG={"optim": "galore_adamw"}))
    assert 'TRAINING_CONFIG.optim: "galore_adamw" needs the package galore_torch' in msg


def test_the_report_shows_json_variables_by_keys_and_urls_without_their_query(env, monkeypatch, tmp_path):
    from rich.console import Console

    from trainer.pod.report import print_report

    signed = "https://abc.supabase.co/storage/v1/object/sign/sets/p.jsonl.gz?token=SIGNEDSECRET"
    for where in ("trainer.config.load", "trainer.config.checks"):  # no download here
        monkeypatch.setattr(f"{where}.check_path", lambda *a, **k: None)
    cfg = env(MODEL_NAME="m", DATASET_URL="https://user:pw@data.example/d.jsonl.gz?token=SIGNEDSECRET",
              PREDICTIONS_CONFIG={"enabled": True, "samples_path": signed})()
    console = Console(width=400, record=True, file=open(os.devnull, "w"))
    print_report(cfg, 1, "cpu", "no", console=console)
    text = console.export_text()
    assert "SIGNEDSECRET" not in text and "pw@" not in text
    assert "https://data.example/d.jsonl.gz (userinfo and query hidden)" in text
    assert "keys: enabled, samples_path" in text
    assert "learning rate: 2e-05 — default" in text


def test_the_report_prints_the_effective_settings_and_their_sources(env):
    from rich.console import Console

    from trainer.pod.report import print_report

    cfg = env(TRAINING_CONFIG={"max_steps": 5, "gradient_accumulation_steps": 2})()
    console = Console(width=400, record=True, file=open(os.devnull, "w"))
    print_report(cfg, 2, "cpu", "no", console=console)
    text = console.export_text()
    assert "length: 5 steps — TRAINING_CONFIG" in text
    assert "learning rate: 0.002 — demo" in text  # one key set: the demo's other defaults stay
    assert "batch: 32 per process × 2 accumulation × 2 processes = 128 rows per step — TRAINING_CONFIG / demo" in text
    assert "optimizer: adamw_torch_fused — default" in text
    assert "evaluation: epoch — follows the data (evaluation data present)" in text
    assert "predictions: 24 samples, at each epoch end, max_new_tokens 32 — demo" in text


def test_redaction():
    from trainer.redact import redact_text, redact_url

    assert redact_url("https://u:p@h.io:8443/a/b.gz?sig=x#f") == "https://h.io:8443/a/b.gz"
    assert redact_url("/local/file.jsonl") == "/local/file.jsonl"
    url = "https://h.io/a?token=T"
    assert redact_text(f"GET {url} failed", [url, None]) == "GET https://h.io/a failed"


@pytest.mark.parametrize(
    "variable, value, expected",
    [
        ("TRAINING_CONFIG", '{"num_train_epochs": Infinity}', "TRAINING_CONFIG.num_train_epochs: Input should be a finite number"),
        ("TRAINING_CONFIG", {"num_train_epochs": 1e308}, "TRAINING_CONFIG.num_train_epochs: Input should be less than or equal to 10000"),
        ("TRAINING_CONFIG", {"seed": -1}, "TRAINING_CONFIG.seed: Input should be greater than or equal to 0"),
        ("TRAINING_CONFIG", '{"max_grad_norm": NaN}', "TRAINING_CONFIG.max_grad_norm: Input should be a finite number"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "write_timeout_s": 1e308}, "PREDICTIONS_CONFIG.write_timeout_s: Input should be less than or equal to 86400"),
        ("PREDICTIONS_CONFIG", '{"enabled": true, "drain_timeout_s": Infinity}', "PREDICTIONS_CONFIG.drain_timeout_s: Input should be a finite number"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "seed": 2**32}, "PREDICTIONS_CONFIG.seed: Input should be less than or equal to 4294967295"),
        ("MODEL_NAME", "/nope/model", "MODEL_NAME: /nope/model: no such folder"),
        ("MODEL_NAME", "   ", "MODEL_NAME: empty"),
    ],
)
def test_values_accepted_are_values_that_run(env, variable, value, expected):
    """Finite, in range, checked where read: a value the report accepts never crashes a training
    process after it (an adversarial run found each of these as a traceback)."""
    base = {"MODEL_NAME": "m", "DATASET_PATH": env.data}
    assert expected in error_of(env(**{**base, variable: value}))


def test_surrounding_whitespace_is_stripped_and_an_empty_model_folder_refused(env, tmp_path):
    assert env(MODEL_NAME=" demo\n")().is_demo  # not "DATASET_PATH is missing" for a model named " demo"
    (tmp_path / "empty-model").mkdir()
    assert f"MODEL_NAME: {tmp_path / 'empty-model'} is a folder without a model (no config.json)" in error_of(
        env(MODEL_NAME=str(tmp_path / "empty-model"), DATASET_PATH=env.data))


def test_save_steps_alone_saves_on_the_demo(env):
    """The demo's save_strategy is "no": naming save_steps alone means saving every that many steps."""
    cfg = env(TRAINING_CONFIG={"save_steps": 50})()
    assert (cfg.training.save_strategy, cfg.training.save_steps) == ("steps", 50)
    assert cfg.training_sources["save_strategy"] == "TRAINING_CONFIG"
    assert env(TRAINING_CONFIG={"save_steps": 50, "save_strategy": "no"})().training.save_strategy == "no"


def test_every_problem_at_once_and_what_each_refused_value_accepts(env):
    """A bad key does not hide the checks across keys (sample_count 0 with a bad sample_frequency),
    and a refused value names what is accepted."""
    msg = error_of(env(TRAINING_CONFIG={"learning_rate": "fast", "per_device_train_batch_size": 2.5, "max_steps": 0},
                       PREDICTIONS_CONFIG={"enabled": True, "sample_count": 0, "sample_frequency": "often"}))
    assert "TRAINING_CONFIG.learning_rate: " in msg and "(got 'fast'); accepted: a number" in msg
    assert "greater than 0" in msg.split("learning_rate")[1].splitlines()[0]
    assert "per_device_train_batch_size" in msg and "accepted: a whole number" in msg
    assert "PREDICTIONS_CONFIG.sample_frequency: Input should be 'eval', 'epoch' or 'steps'" in msg
    assert "PREDICTIONS_CONFIG.sample_count: must be at least 1 when predictions are enabled (got 0)" in msg
    assert "TRAINING_CONFIG.max_steps: must be positive" in msg
    assert msg.startswith("5 problems")
