"""The generator on tiny real models: batching changes nothing, the counts are right, and the
model's and tokenizer's state comes back."""

from __future__ import annotations

import copy

import pytest
import torch

from predictions.generator import generate_predictions, generation_mode
from trainer.demo import build_model, build_word_tokenizer, make_task_rows

ROWS = make_task_rows(400, seed=5)
# Lengths from 1 to 7 words, so batches carry real left padding.
PROMPTS = [r["prompt"] for r in ROWS[:7]] + ["reverse: red", "reverse: cat dog owl bee ant cow elk"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny matmuls are fastest on one thread; two OpenMP threads on a busy machine cost ~20 ms each.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer([r["prompt"] + " " + r["completion"] for r in ROWS])


@pytest.fixture(autouse=True)
def tokenizer_state(tokenizer):
    """Tests change the shared tokenizer's padding side; each starts from "right"."""
    tokenizer.padding_side = "right"
    yield
    tokenizer.padding_side, tokenizer.pad_token = "right", "<pad>"


@pytest.fixture(scope="module")
def trained(tokenizer):
    """60 steps on the reversal task (~1 s): fresh tied weights only echo the last token, which
    would hide a padding or position bug; a trained model's answers depend on the whole prompt."""
    model = build_model(tokenizer, hidden_size=64, layers=2, heads=4, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    texts = [f"{r['prompt']} {r['completion']} {tokenizer.eos_token}" for r in ROWS]
    model.train()
    for step in range(60):
        enc = tokenizer(texts[step * 16 % len(texts):][:16], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture
def model(trained):
    return copy.deepcopy(trained)  # tests change its mode and patch its methods


def scripted(tokenizer, rules: dict[str, str], default: str):
    """A model whose next token is fixed by the last one (`rules`, else `default`): exact counts."""
    model = build_model(tokenizer, hidden_size=16, layers=1, heads=2)
    table = torch.full((len(tokenizer),), tokenizer.convert_tokens_to_ids(default))
    for last, following in rules.items():
        table[tokenizer.convert_tokens_to_ids(last)] = tokenizer.convert_tokens_to_ids(following)
    seen = {}
    model.model.embed_tokens.register_forward_hook(lambda _m, args, _out: seen.update(ids=args[0]))

    def steer(_m, _args, logits):
        ids = seen["ids"][:, -logits.shape[1]:]
        return torch.nn.functional.one_hot(table[ids], logits.shape[-1]).to(logits.dtype) * 100

    model.lm_head.register_forward_hook(steer)
    return model


def test_batched_output_equals_one_at_a_time_greedy(model, tokenizer):
    batched = generate_predictions(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=4)
    single = [generate_predictions(model, tokenizer, [p], max_new_tokens=8)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [(g.completion_tokens, g.stop_reason) for g in batched] == [(g.completion_tokens, g.stop_reason) for g in single]
    assert [g.prompt_tokens for g in batched] == [len(tokenizer(p, add_special_tokens=False).input_ids) for p in PROMPTS]
    # The comparison means something: answers differ and some rows stop early while others run on.
    assert len({g.text for g in batched}) > 3 and {g.stop_reason for g in batched} == {"eos", "length"}
    assert all(g.latency_ms > 0 and g.do_sample is False and g.temperature is g.top_p is None for g in batched)


def test_token_counts_and_stop_reasons_with_padding_after_eos(tokenizer):
    # blue → cat → dog → EOS; owl → owl forever. One batch: the EOS rows are padded while owl runs on.
    model = scripted(tokenizer, {"blue": "cat", "cat": "dog", "dog": tokenizer.eos_token, "owl": "owl"}, default="cat")
    prompts = ["reverse: red blue", "reverse: owl", "reverse: dog"]
    gens = generate_predictions(model, tokenizer, prompts, max_new_tokens=5)
    assert [g.text for g in gens] == ["cat dog", "owl owl owl owl owl", ""]
    assert [g.completion_tokens for g in gens] == [3, 5, 1]  # EOS counted, padding after it not
    assert [g.stop_reason for g in gens] == ["eos", "length", "eos"]
    assert [g.prompt_tokens for g in gens] == [3, 2, 2]
    assert all(g.max_new_tokens == 5 for g in gens) and len({g.latency_ms for g in gens}) == 1


def test_model_state_and_padding_side_are_restored(model, tokenizer):
    model.train()
    model.activation_checkpointing_enable(every_n_layers=2)  # only layer 0: a choice to keep
    model.config.use_cache = False
    tokenizer.padding_side = "right"
    flags = {name: m.gradient_checkpointing for name, m in model.named_modules() if hasattr(m, "gradient_checkpointing")}
    assert True in flags.values() and False in flags.values()
    seen = {}
    real_generate = model.generate

    def spy(*args, **kwargs):
        seen.update(training=model.training, grad=torch.is_grad_enabled(), side=tokenizer.padding_side,
                    cache=model.config.use_cache, checkpointing=model.is_activation_checkpointing)
        return real_generate(*args, **kwargs)

    model.generate = spy
    generate_predictions(model, tokenizer, PROMPTS[:3], max_new_tokens=3)
    assert seen == {"training": False, "grad": False, "side": "left", "cache": True, "checkpointing": False}
    assert model.training and tokenizer.padding_side == "right" and model.config.use_cache is False
    assert flags == {name: m.gradient_checkpointing for name, m in model.named_modules() if hasattr(m, "gradient_checkpointing")}
    # Training goes on: no inference tensors were left behind for the backward to trip on.
    enc = tokenizer(PROMPTS[:2], return_tensors="pt", padding=True, add_special_tokens=False)
    model(**enc, labels=enc["input_ids"]).loss.backward()
    assert model.model.embed_tokens.weight.grad is not None


def test_state_is_restored_when_generate_raises(model, tokenizer):
    model.train()
    model.activation_checkpointing_enable()
    model.config.use_cache = False
    tokenizer.padding_side = "right"

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory (test)")

    model.generate = boom
    with pytest.raises(RuntimeError, match="out of memory"):
        generate_predictions(model, tokenizer, PROMPTS[:2], max_new_tokens=3)
    assert model.training and tokenizer.padding_side == "right" and torch.is_grad_enabled()
    assert model.is_activation_checkpointing and model.config.use_cache is False


def test_a_tokenizer_without_a_pad_token_pads_with_eos_for_the_round_only(model, tokenizer):
    expected = [g.text for g in generate_predictions(model, tokenizer, PROMPTS, max_new_tokens=6)]
    tokenizer.pad_token = None
    assert [g.text for g in generate_predictions(model, tokenizer, PROMPTS, max_new_tokens=6)] == expected
    assert tokenizer.pad_token is None


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft calls it
def test_a_peft_model(model, tokenizer):
    peft = pytest.importorskip("peft")
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    wrapped.train()
    wrapped.config.use_cache = False
    batched = generate_predictions(wrapped, tokenizer, PROMPTS, max_new_tokens=6, batch_size=4)
    single = [generate_predictions(wrapped, tokenizer, [p], max_new_tokens=6)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert wrapped.training and wrapped.config.use_cache is False


def test_hub_generation_defaults_do_not_leak_into_the_round(model, tokenizer):
    greedy = [g.text for g in generate_predictions(model, tokenizer, PROMPTS, max_new_tokens=6)]
    # A Hub model's generation_config.json often asks for sampling; the round decides, not it.
    model.generation_config.update(do_sample=True, temperature=0.01, top_p=0.5, top_k=1)
    assert [g.text for g in generate_predictions(model, tokenizer, PROMPTS, max_new_tokens=6)] == greedy
    sampled = generate_predictions(model, tokenizer, PROMPTS, max_new_tokens=6, do_sample=True, seed=0)
    assert (sampled[0].temperature, sampled[0].top_p) == (1.0, 1.0)  # what was used, recorded
    assert [g.text for g in sampled] != greedy  # temperature 0.01 / top_k 1 would have made it greedy


def test_sampling_with_a_seed_is_reproducible_and_leaves_training_rng_alone(model, tokenizer):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    kwargs = dict(max_new_tokens=6, do_sample=True, temperature=1.5, top_p=0.95, seed=7)
    a = generate_predictions(model, tokenizer, PROMPTS, **kwargs)
    assert torch.rand(1) == expected_next  # the training process's random stream is untouched
    b = generate_predictions(model, tokenizer, PROMPTS, **kwargs)
    c = generate_predictions(model, tokenizer, PROMPTS, **{**kwargs, "seed": 8})
    assert [g.text for g in a] == [g.text for g in b] != [g.text for g in c]
    assert (a[0].do_sample, a[0].temperature, a[0].top_p) == (True, 1.5, 0.95)


def test_edge_inputs(model, tokenizer):
    assert generate_predictions(model, tokenizer, [], max_new_tokens=4) == []
    with pytest.raises(ValueError, match="prompt 1 tokenises to nothing"):
        generate_predictions(model, tokenizer, ["reverse: red", "   "], max_new_tokens=4)
    with pytest.raises(ValueError, match="must be positive"):
        generate_predictions(model, tokenizer, ["reverse: red"], max_new_tokens=0)
    assert tokenizer.padding_side == "right"


def test_generation_mode_alone(model, tokenizer):
    model.train()
    with generation_mode(model, tokenizer):
        assert not model.training and not torch.is_grad_enabled() and tokenizer.padding_side == "left"
    assert model.training
