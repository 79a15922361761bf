"""The platform's nested job configuration (PLATFORM.md §4): a corpus of configurations as the
platform stores and emits them, each accepted or refused naming the key; and one real short
training run from a nested configuration through the entrypoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e import job_env, run_entrypoint, spool_rows
from trainer.config.errors import ConfigError
from trainer.config.load import load_config

CORPUS = Path(__file__).parent / "platform_configs"

#: file → None (accepted) or the problems the message must name (each `TRAINING_CONFIG.<key>: …`).
EXPECTED = {
    "stored_sft_predictions_disabled_zero_cosine_with_restarts.json": None,
    "stored_sft_predictions_eval.json": None,
    "stored_sft_predictions_epoch_paged_adamw_8bit_4bit.json": None,
    "stored_sft_8bit_lora.json": None,
    "deploy_route_steps_inline_schema_object.json": None,
    "deploy_route_eval_epoch_inline_schema_string.json": None,
    "stored_dpo.json": None,
    "stored_rlhf.json": None,
    "stored_sft_packing.json": None,
    "typo_learning_rat.json": ["TRAINING_CONFIG.training.learning_rat: unknown key; accepted: method, use_lora"],
    "several_mistakes.json": [
        "TRAINING_CONFIG.training.quantization: load_in_4bit and load_in_8bit are both true: choose one",
        "TRAINING_CONFIG.training.lr_scheduler_type: Input should be 'linear', 'cosine', 'cosine_with_restarts'",
        "TRAINING_CONFIG.predictions.sample_count: must be at least 1 when predictions are enabled (got 0)",
    ],
}


@pytest.fixture
def platform_env(job_environ, monkeypatch, tmp_path):
    """The environment a platform pod gets (no MODEL_NAME: the configuration's model.name)."""
    data = tmp_path / "dataset.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": "a"}) + "\n" for i in range(20)))
    job_environ(DATASET_URL=str(data), JOB_ID="job_abc123")  # the platform's job ids are text

    def load(config: dict):
        monkeypatch.setenv("TRAINING_CONFIG", json.dumps(config))
        return load_config()

    return load


def test_the_corpus_is_covered():
    assert sorted(p.name for p in CORPUS.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_platform_configuration_is_accepted_or_refused_naming_the_key(platform_env, name):
    config = json.loads((CORPUS / name).read_text())
    expected = EXPECTED[name]
    if expected is None:
        cfg = platform_env(config)
        assert cfg.config_shape == "platform"
        assert cfg.model_name == config["model"]["name"]
        t = config["training"]
        assert cfg.training.learning_rate == t["learning_rate"]
        assert cfg.training.lr_scheduler_type == t.get("lr_scheduler_type", "linear")
        assert cfg.training.optim == t["optim"]
        assert cfg.training.per_device_train_batch_size == t["batch_size"]
        assert cfg.training.max_seq_length == t["max_length"]
        assert cfg.training.eval_strategy == t["evaluation_strategy"]
        assert cfg.training.trust_remote_code == config["model"]["trust_remote_code"]
        assert cfg.training.mixed_precision == ("bf16" if t["bf16"] else "no")
        q = t.get("quantization") or {}
        assert cfg.training.quant_bits == (8 if q.get("load_in_8bit") else 4 if q.get("load_in_4bit") else None)
        if "predictions" not in config:
            return
        assert cfg.predictions.enabled == config["predictions"]["enabled"]
        assert cfg.predictions_source == "TRAINING_CONFIG.predictions"
        validators = config["predictions"].get("validators", {})
        if "json_schema" in validators:
            assert cfg.json_schema == {"type": "object", "required": ["answer"]}
        return
    with pytest.raises(ConfigError) as info:
        platform_env(config)
    message = str(info.value)
    for part in expected:
        assert part in message, message
    assert len(info.value.problems) == len(expected), message  # nothing else was refused


def test_every_stored_job_loads_with_its_method(platform_env):
    """The platform's stored jobs in the corpus all load, each with its method (rlhf as KTO) and packing."""
    methods = {"sft": "sft", "dpo": "dpo", "orpo": "orpo", "rlhf": "kto"}
    for path in CORPUS.glob("stored_*.json"):
        config = json.loads(path.read_text())
        cfg = platform_env(config)
        assert cfg.training.method == methods[config["training"].get("method", "sft")], path.name
        assert cfg.training.packing == bool(config["training"].get("packing")), path.name


def test_keys_without_effect_are_said_in_the_report_not_dropped(platform_env):
    config = json.loads((CORPUS / "stored_sft_predictions_disabled_zero_cosine_with_restarts.json").read_text())
    cfg = platform_env(config)
    notes = "\n".join(cfg.notes)
    assert "warmup_ratio 0.1 not used: warmup_steps 100 overrides it" in notes
    assert "training.lora_config not used" in notes and cfg.training.lora.r == config["lora"]["r"]
    assert "dataset_path" in notes and "output_dir" in notes


def test_predictions_both_set_and_different_is_an_error_naming_both(platform_env, monkeypatch):
    config = json.loads((CORPUS / "deploy_route_steps_inline_schema_object.json").read_text())
    monkeypatch.setenv("PREDICTIONS_CONFIG", json.dumps({"enabled": True, "sample_count": 3}))
    with pytest.raises(ConfigError) as info:
        platform_env(config)
    assert "PREDICTIONS_CONFIG: differs from TRAINING_CONFIG.predictions" in str(info.value)
    monkeypatch.setenv("PREDICTIONS_CONFIG", json.dumps(config["predictions"]))  # equal: fine
    assert platform_env(config).predictions.sample_count == 5


def test_model_name_and_the_configurations_model_must_agree(platform_env, monkeypatch):
    config = json.loads((CORPUS / "stored_sft_8bit_lora.json").read_text())
    monkeypatch.setenv("MODEL_NAME", "other/model")
    with pytest.raises(ConfigError) as info:
        platform_env(config)
    assert "MODEL_NAME: 'other/model' differs from TRAINING_CONFIG.model.name" in str(info.value)


#: A platform job configuration for the demo model on a CPU: what a platform sends, shrunk to
#: seconds (max_steps), with the keys most real jobs set (paged optimizer and bf16 fall back on a CPU).
NESTED_DEMO_JOB = {
    "model": {"name": "demo", "trust_remote_code": True, "torch_dtype": "bfloat16", "device_map": "auto"},
    "tokenizer": {"name": "demo", "trust_remote_code": True},
    "training": {
        "method": "sft", "use_lora": False, "num_epochs": 1, "max_steps": 12, "batch_size": 16,
        "eval_batch_size": 16, "learning_rate": 0.002, "lr_scheduler_type": "cosine_with_restarts",
        "warmup_ratio": 0.1, "save_steps": 6, "save_total_limit": 2, "save_strategy": "steps",
        "evaluation_strategy": "steps", "eval_steps": 6, "logging_steps": 6, "gradient_accumulation_steps": 1,
        "max_length": 32, "bf16": True, "fp16": False, "optim": "paged_adamw_8bit", "max_grad_norm": 1.0,
        "weight_decay": 0.01, "gradient_checkpointing": False, "group_by_length": True, "packing": False,
        "dataloader_num_workers": 1, "dataloader_prefetch_factor": 2, "dataloader_pin_memory": True,
        "quantization": {"load_in_4bit": False},
    },
    "data": {"strategy": "standard", "generation_type": "real", "train_split": 0.95, "eval_split": 0.05},
    "predictions": {"enabled": True, "sample_count": 4, "sample_frequency": "eval",
                    "validators": {"json_parse": False}},
}


@pytest.mark.slow
def test_a_real_short_training_run_from_a_nested_platform_configuration(tmp_path):
    from trainer.demo import TRAIN_FILE

    data = tmp_path / "dataset.jsonl"
    data.write_text("".join(TRAIN_FILE.read_text().splitlines(keepends=True)[:400]))
    out = tmp_path / "out"
    env = job_env(out, TRAINING_CONFIG=NESTED_DEMO_JOB, DATASET_URL=str(data), JOB_ID="job_abc123")
    proc = run_entrypoint(env, timeout=900)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-4000:]
    assert "TRAINING_CONFIG: the platform's nested job configuration" in printed
    assert "scheduler: cosine_with_restarts, warmup 0.1 of all steps — platform config (training." in printed
    assert "optimizer: adamw_torch_fused — platform config (training.optim) (optim paged_adamw_8bit needs bitsandbytes" in printed
    assert "trust_remote_code: true — platform config (model.trust_remote_code)" in printed
    assert "evaluation: steps — platform config (training.evaluation_strategy), every 6 steps" in printed
    assert "predictions: 4 samples, after each evaluation, max_new_tokens 32 — TRAINING_CONFIG.predictions" in printed
    assert "held out 20 of 400 rows for evaluation" in printed  # data.eval_split 0.05
    rows = spool_rows(out)
    # a baseline round (the demo's default, not overridden) plus one after each of the 2 evaluations
    assert sorted({r["step"] for r in rows}) == [0, 6, 12]
    assert {r["job_id"] for r in rows} == {"job_abc123"} and all(len([x for x in rows if x["step"] == s]) == 4
                                                                  for s in (0, 6, 12))
    assert (out / "final" / "model.safetensors").exists()


def test_the_platforms_8bit_lora_loads_8bit_weights_under_an_adapter(platform_env, monkeypatch):
    """training.quantization.load_in_8bit → BitsAndBytesConfig(load_in_8bit) + LoRA; one real step."""
    import torch

    from trainer.model import load_model, load_tokenizer

    config = json.loads((CORPUS / "stored_sft_8bit_lora.json").read_text())
    config["model"]["name"] = "demo"  # the same settings on the bundled model (nothing downloaded)
    config.pop("tokenizer")
    cfg = platform_env(config)
    assert cfg.training.finetuning == "lora" and cfg.training.quant_bits == 8
    tokenizer = load_tokenizer(cfg)
    model = load_model(cfg, tokenizer)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert type(layer.base_layer).__name__ == "Linear8bitLt" and hasattr(layer, "lora_A")
    ids = torch.tensor([[tokenizer.bos_token_id, 5, 6, 7]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and layer.lora_B["default"].weight.grad is not None


def test_a_storage_path_for_samples_says_it_must_be_a_signed_url(platform_env):
    config = json.loads((CORPUS / "deploy_route_steps_inline_schema_object.json").read_text())
    config["predictions"]["samples_path"] = "prediction-sets/abc.jsonl.gz"  # as the platform's UI stores it
    with pytest.raises(ConfigError) as info:
        platform_env(config)
    assert ("TRAINING_CONFIG.predictions.samples_path: file not found: 'prediction-sets/abc.jsonl.gz'; a path in "
            "the platform's storage must reach the pod as a signed https URL") in str(info.value)
