"""The generator on a tiny real model: batching changes nothing, and the model's state comes back."""

from __future__ import annotations

import pytest
import torch

from predictions.generator import generate_predictions, generation_mode
from trainer.demo import build_model, build_tokenizer, make_task_rows

ROWS = make_task_rows(30, seed=5)
PROMPTS = [r["prompt"] for r in ROWS[:7]] + ["reverse: red", "reverse: cat dog owl bee ant cow elk"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([r["prompt"] + " " + r["completion"] for r in ROWS])


@pytest.fixture
def model(tokenizer):
    return build_model(tokenizer, hidden_size=32, layers=2, heads=2, seed=1)


def test_batched_output_equals_one_at_a_time_greedy(model, tokenizer):
    batched = generate_predictions(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=4)
    single = [generate_predictions(model, tokenizer, [p], max_new_tokens=8)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.completion_tokens for g in batched] == [g.completion_tokens for g in single]
    assert [g.prompt_tokens for g in batched] == [len(tokenizer(p, add_special_tokens=False).input_ids) for p in PROMPTS]


def test_model_state_and_padding_side_are_restored(model, tokenizer):
    model.train()
    model.activation_checkpointing_enable()
    model.config.use_cache = False
    tokenizer.padding_side = "right"
    seen = {}

    real_generate = model.generate

    def spy(*args, **kwargs):
        seen.update(training=model.training, grad=torch.is_grad_enabled(), side=tokenizer.padding_side,
                    cache=model.config.use_cache, checkpointing=model.is_activation_checkpointing)
        return real_generate(*args, **kwargs)

    model.generate = spy
    generate_predictions(model, tokenizer, PROMPTS[:3], max_new_tokens=3)
    assert seen == {"training": False, "grad": False, "side": "left", "cache": True, "checkpointing": False}
    assert model.training and tokenizer.padding_side == "right"
    assert model.config.use_cache is False and model.is_activation_checkpointing


def test_state_is_restored_when_generate_raises(model, tokenizer):
    model.train()
    tokenizer.padding_side = "right"

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory (test)")

    model.generate = boom
    with pytest.raises(RuntimeError, match="out of memory"):
        generate_predictions(model, tokenizer, PROMPTS[:2], max_new_tokens=3)
    assert model.training and tokenizer.padding_side == "right" and torch.is_grad_enabled()


def test_stop_reason_and_token_counts(tokenizer):
    # A model whose only answer is EOS: the stop reason is "eos" and one token is counted.
    model = build_model(tokenizer, hidden_size=32, layers=1, heads=2)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.model.norm.weight.zero_()
        model.lm_head.bias = None
    eos_bias = torch.zeros(len(tokenizer))
    eos_bias[tokenizer.eos_token_id] = 10.0
    model.lm_head.register_forward_hook(lambda _m, _i, out: out + eos_bias)
    (gen,) = generate_predictions(model, tokenizer, PROMPTS[:1], max_new_tokens=5)
    assert gen.stop_reason == "eos" and gen.completion_tokens == 1 and gen.text == ""

    fresh = build_model(tokenizer, hidden_size=32, layers=1, heads=2, seed=3)
    gens = generate_predictions(fresh, tokenizer, PROMPTS[:4], max_new_tokens=2)
    for g in gens:
        assert g.stop_reason in ("eos", "length") and 1 <= g.completion_tokens <= 2
        assert g.stop_reason == "eos" or g.completion_tokens == 2
        assert g.max_new_tokens == 2 and g.do_sample is False and g.temperature is None


def test_sampling_with_a_seed_is_reproducible_and_leaves_training_rng_alone(model, tokenizer):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=1.5, top_p=0.95, seed=7)
    a = generate_predictions(model, tokenizer, PROMPTS, **kwargs)
    assert torch.rand(1) == expected_next  # the training process's random stream is untouched
    b = generate_predictions(model, tokenizer, PROMPTS, **kwargs)
    assert [g.text for g in a] == [g.text for g in b]
    assert a[0].temperature == 1.5 and a[0].top_p == 0.95


def test_generation_mode_alone(model, tokenizer):
    model.train()
    with generation_mode(model, tokenizer):
        assert not model.training and not torch.is_grad_enabled()
    assert model.training
