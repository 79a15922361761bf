"""The model's answers for the fixed sample: batched `generate`, with the model's training state
saved before and restored after.

Batched greedy output equals one-at-a-time greedy output: prompts are left-padded (the new tokens
line up at the right edge) and the attention mask tells the model which positions are padding
(Llama-style models derive position ids from it, so padding does not shift the positions).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from transformers import GenerationConfig

from predictions.rows import Generation


@contextmanager
def generation_mode(model, tokenizer=None) -> Iterator[None]:
    """Eval mode, no_grad, activation checkpointing off, KV cache on and (with a tokenizer) left
    padding with a pad token — for the round only. Everything is put back as it was, also when
    generation raises. Works on a bare transformers model and on a peft-wrapped one.

    The Trainer turns `config.use_cache` off (the cache is useless in training); without it
    generation recomputes every position at every new token. Checkpointing is switched off by the
    layers' own flag, not by `activation_checkpointing_disable()`: that one would also drop peft's
    input-require-grads hook, and re-enabling would lose the checkpoint kwargs, `every_n_layers` and
    offload the Trainer chose. Flipping back exactly the flags we flipped restores all of it.
    """
    was_training = model.training
    checkpointed = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    config = getattr(model, "config", None)
    has_use_cache = hasattr(config, "use_cache")  # peft's custom models may carry a plain dict
    use_cache = getattr(config, "use_cache", None)
    padding_side = getattr(tokenizer, "padding_side", None)
    pad_token = getattr(tokenizer, "pad_token", None)
    try:
        model.eval()
        for m in checkpointed:
            m.gradient_checkpointing = False
        if has_use_cache:
            config.use_cache = True
        if tokenizer is not None:
            tokenizer.padding_side = "left"
            if pad_token is None and tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token  # batching needs one; EOS is the usual stand-in
        with torch.no_grad():  # not inference_mode: its tensors would break a later backward
            yield
    finally:
        if tokenizer is not None:
            tokenizer.padding_side = padding_side
            if pad_token is None:
                tokenizer.pad_token = None
        if has_use_cache:
            config.use_cache = use_cache
        for m in checkpointed:
            m.gradient_checkpointing = True
        model.train(was_training)


def _eos_ids(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus any the model's generation config names (chat models often add an
    end-of-turn token there): generation stops on all of them, so counting does too."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return sorted(ids)


def _input_device(model) -> torch.device:
    """Where the inputs go: the embeddings' device (the first of several under a device map)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embeddings, "weight", None)
    return weight.device if isinstance(weight, torch.Tensor) else next(model.parameters()).device


def _generation_config(max_new_tokens: int, do_sample: bool, temperature: float | None, top_p: float | None,
                       pad_id: int | None, eos_ids: list[int]) -> GenerationConfig:
    """An explicit config. generate() fills every field left None from the model's own
    generation_config (a Hub model's may say temperature=0.6, top_k=20), so the sampling knobs are
    all set here: the row's temperature/top_p are then the whole story, and top_k is off."""
    sampling = (
        {"temperature": temperature, "top_p": top_p, "top_k": 0}
        if do_sample
        else {"temperature": 1.0, "top_p": 1.0, "top_k": 50}  # the neutral defaults: greedy, no warning
    )
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad_id,
                            eos_token_id=eos_ids or None, use_cache=True, **sampling)


def generate_predictions(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    batch_size: int = 8,
) -> list[Generation]:
    """One Generation per prompt, in the prompts' order.

    Prompts are already rendered (chat template applied), so they are tokenised without special
    tokens. Greedy unless `do_sample`; when sampling, temperature and top_p default to 1.0 and the
    Generation records the values used. `seed` makes sampling reproducible for the same prompts and
    batch_size (the batch layout decides which draw goes to which row); the caller's random streams
    (CPU and CUDA) are left as they were either way.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError(f"max_new_tokens and batch_size must be positive, got {max_new_tokens} and {batch_size}")
    if not prompts:
        return []
    if do_sample:
        temperature = 1.0 if temperature is None else float(temperature)
        top_p = 1.0 if top_p is None else float(top_p)
    else:
        temperature = top_p = None  # not used by greedy decoding, so not recorded
    eos_ids = _eos_ids(model, tokenizer)
    # generation_mode pads with the tokenizer's EOS when it has no pad token; generate pads with the same.
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, *eos_ids) if t is not None), None)
    gen_config = _generation_config(max_new_tokens, do_sample, temperature, top_p, pad_id, eos_ids)
    device = _input_device(model)
    cuda_devices = sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"})

    results: list[Generation | None] = [None] * len(prompts)
    with generation_mode(model, tokenizer), torch.random.fork_rng(devices=cuda_devices):
        if seed is not None:
            torch.manual_seed(seed)  # inside fork_rng: training's random stream is untouched
        lengths = [len(ids) for ids in tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        if 0 in lengths:
            raise ValueError(f"prompt {lengths.index(0)} tokenises to nothing; there is nothing to continue")
        # Similar lengths share a batch: less padding, fewer wasted positions. The order is put
        # back through `results`; greedy answers do not depend on the batch (tested).
        order = sorted(range(len(prompts)), key=lengths.__getitem__)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            for i, generation in zip(batch, _generate_batch(model, tokenizer, [prompts[i] for i in batch],
                                                            gen_config, device, eos_ids)):
                assert generation.prompt_tokens == lengths[i], "batch tokenisation differs from the lone one"
                results[i] = generation
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def _generate_batch(model, tokenizer, prompts: list[str], gen_config: GenerationConfig, device: torch.device,
                    eos_ids: list[int]) -> list[Generation]:
    """One `generate` call; the tokenizer is already left-padding (see generation_mode)."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    input_ids, attention_mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    began = time.perf_counter()
    # Only ids and mask: some tokenizers add token_type_ids, which causal LMs' generate rejects.
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=gen_config)
    new_tokens = out[:, input_ids.shape[1]:].tolist()  # a copy to the host: a sync point, so the time is real
    latency_ms = (time.perf_counter() - began) * 1000 / len(prompts)

    generations = []
    for row, mask in zip(new_tokens, attention_mask.tolist()):
        stop = next((k for k, t in enumerate(row) if t in eos_ids), None)
        completion = row if stop is None else row[: stop + 1]  # padding after EOS is not output
        generations.append(Generation(
            text=tokenizer.decode(completion, skip_special_tokens=True).strip(),
            prompt_tokens=sum(mask),
            completion_tokens=len(completion),
            latency_ms=latency_ms,
            stop_reason="eos" if stop is not None else "length",
            max_new_tokens=gen_config.max_new_tokens,
            do_sample=gen_config.do_sample,
            temperature=gen_config.temperature if gen_config.do_sample else None,
            top_p=gen_config.top_p if gen_config.do_sample else None,
        ))
    return generations
