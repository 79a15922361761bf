"""The model's answers for the fixed sample: batched `generate`, with the model's training state
saved before and restored after.

Batched greedy output equals one-at-a-time greedy output: prompts are left-padded (the new tokens
line up at the right edge) and the attention mask tells the model which positions are padding.
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
    """Eval mode, no_grad, activation checkpointing off, KV cache on, left padding — for the
    round only. Everything is put back as it was, also when generation raises.

    The Trainer turns `config.use_cache` off (the cache is useless and costly in training); without
    it generation recomputes every position at every new token. Checkpointing is switched off by
    the layers' own flag, so the checkpointing function and its kwargs stay as the Trainer set them.
    """
    was_training = model.training
    checkpointed = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False) is True]
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    padding_side = tokenizer.padding_side if tokenizer is not None else None
    try:
        model.eval()
        for m in checkpointed:
            m.gradient_checkpointing = False
        if config is not None:
            config.use_cache = True
        if tokenizer is not None:
            tokenizer.padding_side = "left"
        with torch.no_grad():  # not inference_mode: its tensors would break a later backward
            yield
    finally:
        if tokenizer is not None:
            tokenizer.padding_side = padding_side
        if config is not None:
            config.use_cache = use_cache
        for m in checkpointed:
            m.gradient_checkpointing = True
        model.train(was_training)


def _eos_ids(model, tokenizer) -> list[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return sorted(ids)


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
    """One Generation per prompt, in the prompts' order. Prompts are already rendered, so they
    are tokenised without special tokens."""
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids or [0])[0]
    # An explicit config: a Hub model's generation_config may say do_sample=True / temperature=0.6.
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=top_p if do_sample else None,
        pad_token_id=pad_id,
        eos_token_id=eos_ids or None,
        use_cache=True,
    )
    device = next(model.parameters()).device
    # Similar lengths share a batch: less padding, fewer wasted positions. Order restored below.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[Generation | None] = [None] * len(prompts)
    devices = [device] if device.type == "cuda" else []
    with generation_mode(model, tokenizer), torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)  # inside fork_rng: training's random stream is untouched
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            began = time.perf_counter()
            out = model.generate(**enc, generation_config=gen_config)
            if device.type == "cuda":
                torch.cuda.synchronize()  # a sync point, so the latency is the real one
            latency_ms = (time.perf_counter() - began) * 1000 / len(batch)
            new_tokens = out[:, enc["input_ids"].shape[1]:].tolist()
            for row, i, mask in zip(new_tokens, batch, enc["attention_mask"]):
                stop = next((k for k, t in enumerate(row) if t in eos_ids), None)
                completion = row if stop is None else row[: stop + 1]  # padding after EOS is not output
                results[i] = Generation(
                    text=tokenizer.decode(completion, skip_special_tokens=True).strip(),
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=len(completion),
                    latency_ms=latency_ms,
                    stop_reason="eos" if stop is not None else "length",
                    max_new_tokens=max_new_tokens,
                    do_sample=do_sample,
                    temperature=temperature if do_sample else None,
                    top_p=top_p if do_sample else None,
                )
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
