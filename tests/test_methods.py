"""Every training method (trainer/methods/) through the entrypoint on the demo model, packing's
per-sample loss, TRL's metrics on the metrics route, and data that does not fit."""

from __future__ import annotations

import json
import random

import pytest
import torch

from tests.e2e import job_env, run_entrypoint, spool_rows
from trainer.demo import WORDS, build_model, build_tokenizer

RUN = {"max_steps": 4, "learning_rate": 2e-3, "per_device_train_batch_size": 8, "max_seq_length": 32,
       "save_strategy": "no", "logging_steps": 2, "eval_strategy": "no"}
PREDICT = {"enabled": True, "sample_count": 4, "sample_frequency": "steps", "step_interval": 4, "max_new_tokens": 4,
           "baseline": True}


def _words(rng):
    return [rng.choice(WORDS) for _ in range(rng.randint(3, 5))]


def rows_for(method: str, count: int = 48, seed: int = 0) -> list[dict]:
    """Reversal-task rows in `method`'s format (PLATFORM.md §6)."""
    rng, rows = random.Random(seed), []
    for i in range(count):
        w = _words(rng)
        # wrong: the right first word, then the rest in the prompt's order (a fresh model has no preference)
        prompt, right, wrong = "reverse: " + " ".join(w), " ".join(reversed(w)), " ".join([w[-1], *w[:-1]])
        rows.append({
            "sft": {"prompt": prompt, "completion": right},
            "dpo": {"prompt": prompt, "chosen": right, "rejected": wrong},
            "kto": {"prompt": prompt, "response": right if i % 2 else wrong, "reward": 1.0 if i % 2 else 0.0},
            "cpt": {"text": f"{prompt} {right}"},
        }[{"orpo": "dpo"}.get(method, method)])
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "dpo", "orpo", "kto", "cpt"])
def test_each_method_trains_through_the_entrypoint_and_writes_rows(tmp_path, method):
    data = _write(tmp_path / "data.jsonl", rows_for(method))
    training = {**RUN, "method": method, "packing": method in ("sft", "cpt")}
    env = job_env(tmp_path / "out", MODEL_NAME="demo", DATASET_PATH=str(data), TRAINING_CONFIG=training,
                  PREDICTIONS_CONFIG=PREDICT if method != "cpt" else {"enabled": False})
    proc = run_entrypoint(env, timeout=600)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-4000:]
    assert "progress: done: step 4/4" in printed
    assert f"  method: {method} (TRL " in printed  # the startup report names the trainer
    if method == "cpt":
        return  # raw text has no prompt to predict from
    rows = spool_rows(tmp_path / "out")
    assert sorted({r["step"] for r in rows}) == [0, 4] and len(rows) == 8
    if method in ("dpo", "orpo"):
        assert "rewards/margins" in printed or "log_odds_ratio" in printed  # TRL's logged metrics
        for r in rows:
            assert r["ground_truth"] == " ".join(r["prompt"].split()[1:][::-1])  # the chosen answer
            m = r["metrics"]
            assert set(m) >= {"logp_chosen", "logp_rejected", "reward_margin", "preference_correct"}
            assert m["preference_correct"] == (1.0 if m["reward_margin"] > 0 else 0.0)
        assert "preference_accuracy=" in printed  # the round line; the rounds table has its column
    if method == "dpo":  # the baseline round: the policy is the reference, so every margin is 0
        assert all(r["metrics"]["reward_margin"] == 0.0 for r in rows if r["step"] == 0)


@pytest.mark.slow
@pytest.mark.distributed
def test_dpo_with_two_processes_writes_each_sample_once_with_preference_scores(tmp_path):
    data = _write(tmp_path / "data.jsonl", rows_for("dpo"))
    env = job_env(tmp_path / "out", MODEL_NAME="demo", DATASET_PATH=str(data), NUM_PROCESSES="2",
                  TRAINING_CONFIG={**RUN, "method": "dpo", "finetuning": "lora"}, PREDICTIONS_CONFIG=PREDICT)
    proc = run_entrypoint(env, timeout=600)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed[-4000:]
    rows = spool_rows(tmp_path / "out")
    assert sorted((r["step"], r["sample_index"]) for r in rows) == [(s, i) for s in (0, 4) for i in range(4)]
    assert all("reward_margin" in r["metrics"] for r in rows)


def _tiny():
    tok = build_tokenizer([" ".join(WORDS), "reverse:"])
    model = build_model(tok, hidden_size=32, layers=2, heads=2)
    model.config._attn_implementation = "sdpa"
    return tok, model.eval()


def test_a_packed_batch_gives_each_row_the_loss_it_has_alone():
    """TRL's BFD packing is padding-free: position ids restart per row, no attention mask, so the
    block-diagonal causal mask keeps rows apart (an all-ones mask would let them see each other)."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tok, model = _tiny()
    rng = random.Random(1)
    seqs = [tok(" ".join(_words(rng) * rng.randint(1, 3)), add_special_tokens=False).input_ids for _ in range(6)]
    packed = pack_dataset(Dataset.from_list([{"input_ids": s, "labels": s} for s in seqs]), 32, "bfd")
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(list(packed))
    assert "attention_mask" not in batch
    with torch.no_grad():
        # use_cache=False as SFTTrainer.compute_loss passes it: transformers looks for packed rows only without a cache
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
        for a, b in zip(starts, starts[1:]):
            ids = batch["input_ids"][0, a:b]
            alone = model(input_ids=ids[None]).logits[0]
            packed_loss = torch.nn.functional.cross_entropy(logits[a:b - 1], ids[1:])
            alone_loss = torch.nn.functional.cross_entropy(alone[:-1], ids[1:])
            assert torch.allclose(packed_loss, alone_loss, atol=1e-5), (packed_loss, alone_loss)
        # the same tokens under an all-ones mask see across rows: the losses differ
        leaky = model(input_ids=batch["input_ids"], attention_mask=torch.ones_like(batch["input_ids"]),
                      use_cache=False).logits[0]
        assert not torch.allclose(leaky[starts[1]:starts[2]], logits[starts[1]:starts[2]], atol=1e-4)


def test_the_platforms_rlhf_is_trained_as_kto_and_the_report_says_why(job_environ, monkeypatch):
    from trainer.config.load import load_config

    job_environ(MODEL_NAME="demo")
    monkeypatch.setenv("TRAINING_CONFIG", json.dumps({"training": {"method": "rlhf", "beta": 0.2, "ppo_epochs": 4},
                                                      "data": {"dataset_format": "rlhf"}}))
    cfg = load_config()
    assert (cfg.training.method, cfg.training.beta) == ("kto", 0.2)
    notes = "\n".join(cfg.notes)
    assert 'training.method "rlhf": trained as KTO' in notes
    assert "training.ppo_epochs not used: rlhf is trained as KTO here" in notes


def test_a_method_and_a_dataset_format_that_do_not_fit_are_refused_naming_both(job_environ, monkeypatch):
    from trainer.config.errors import ConfigError
    from trainer.config.load import load_config

    job_environ(MODEL_NAME="demo")
    monkeypatch.setenv("TRAINING_CONFIG", json.dumps({"training": {"method": "dpo"},
                                                      "data": {"dataset_format": "rlhf"}}))
    with pytest.raises(ConfigError) as info:
        load_config()
    assert ('TRAINING_CONFIG.data.dataset_format: "rlhf" does not fit training.method "dpo": it takes "dpo" or '
            '"orpo"') in str(info.value)


def test_settings_a_method_cannot_use_are_refused_naming_the_key(job_environ):
    from trainer.config.errors import ConfigError
    from trainer.config.load import load_config

    job_environ(MODEL_NAME="demo", TRAINING_CONFIG=json.dumps({"method": "kto", "per_device_train_batch_size": 1,
                                                                "packing": True}))
    with pytest.raises(ConfigError) as info:
        load_config()
    message = str(info.value)
    assert "TRAINING_CONFIG.per_device_train_batch_size: must be at least 2 for kto" in message
    assert "TRAINING_CONFIG.packing: packs sft and cpt rows only; kto trains on whole pairs" in message


@pytest.mark.parametrize("method, rows, expected", [
    ("dpo", rows_for("sft", 4), 'do not fit TRAINING_CONFIG.method \'dpo\', which takes {"prompt", "chosen", "rejected"}'),
    ("sft", rows_for("dpo", 4), "no usable row for TRAINING_CONFIG.method 'sft'"),
    ("kto", [{"prompt": "a", "response": "b", "reward": 1}] * 4, "every rewarded row is desirable at "
                                                                   "TRAINING_CONFIG.reward_threshold 0.5"),
    ("kto", [{"prompt": "a", "response": "b"}] * 4, 'no {"prompt", "response", "reward"} row has a reward'),
])
def test_rows_a_method_cannot_train_on_are_refused_before_training(job_environ, tmp_path, caplog, method, rows,
                                                                   expected):
    from trainer.config.load import load_config
    from trainer.data import DataError
    from trainer.datacheck import check_data

    data = _write(tmp_path / "rows.jsonl", rows)
    job_environ(MODEL_NAME="demo", DATASET_PATH=str(data), TRAINING_CONFIG=json.dumps({"method": method}))
    with caplog.at_level("INFO"), pytest.raises(DataError) as info:
        check_data(load_config())
    assert expected in str(info.value) + caplog.text


def test_trls_logged_metrics_reach_the_metrics_route_as_extra_keys():
    from trainer.pod.platform import metric_point

    logs = {"loss": 0.69, "rewards/margins": 0.25, "rewards/accuracies": 0.75, "logps/chosen": -14.2,
            "eval_rewards/margins": float("nan"), "epoch": 0.5}
    point = metric_point(logs, step=4, epoch=0.5, total_steps=8)
    assert point["train_loss"] == 0.69 and "loss" not in point
    assert (point["rewards/margins"], point["rewards/accuracies"], point["logps/chosen"]) == (0.25, 0.75, -14.2)
    assert "eval_rewards/margins" not in point  # NaN is not JSON
