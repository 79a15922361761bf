"""Configuration parsing: every bad input stops with the variable, the key and what is accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config import (
    EXIT_CONFIG,
    MAX_SAMPLE_COUNT,
    VARIABLES,
    ConfigError,
    expected_rounds,
    load_config,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment with a small real dataset; returns a setter."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "a", "completion": "b"}) + "\n")
    monkeypatch.setenv("OUTPUT_DIR", str(tmp_path / "out"))

    def set_(**values):
        for k, v in values.items():
            monkeypatch.setenv(k, v if isinstance(v, str) else json.dumps(v))
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
    assert not cfg.predictions.enabled  # disabled is the default
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
        ("TRAINING_CONFIG", {"lora": {"rank": 3}}, "TRAINING_CONFIG.lora.rank: unknown key (a typo would be silently ignored); accepted: r, alpha"),
        ("TRAINING_CONFIG", {"learning_rate": "fast"}, "TRAINING_CONFIG.learning_rate: Input should be a valid number"),
        ("TRAINING_CONFIG", {"learning_rate": -1}, "TRAINING_CONFIG.learning_rate: Input should be greater than 0 (got -1)"),
        ("TRAINING_CONFIG", {"finetuning": "dora"}, "TRAINING_CONFIG.finetuning: Input should be 'full', 'lora' or 'qlora'"),
        ("TRAINING_CONFIG", {"eval_strategy": "steps"}, "TRAINING_CONFIG.eval_steps"),
        ("PREDICTIONS_CONFIG", {"enabled": True, "sample_count": 0}, "PREDICTIONS_CONFIG.sample_count: Input should be greater than or equal to 1"),
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
        ({"SUPABASE_DB_URL": "postgresql://u:p@h/db", "JOB_ID": "job-1"}, "JOB_ID: must be a UUID"),
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
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update(TRAINING_CONFIG='{"learning_rate": "fast"}', OUTPUT_DIR=str(tmp_path / "out"))
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
