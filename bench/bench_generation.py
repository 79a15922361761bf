"""What batching buys a prediction round: the same prompts generated in batches vs one at a
time, on the demo model (fresh weights, so every answer runs to max_new_tokens). Prints the
ratio of the two, measured in one run, and checks the answers are the same.

Then what a round costs beyond the model itself: `generate_predictions` against a bare
`model.generate` over the same left-padded batches (greedy, cache on, already tokenised), best
of `--repeats` interleaved runs; target <= 1.1. What `generate_predictions` adds is tokenising,
the state switches of `generation_mode`, copying the new tokens to the host and decoding.

    python bench/bench_generation.py [--samples 64] [--batch-size 16] [--max-new-tokens 16] [--repeats 7]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from predictions.generator import _eos_ids, _generation_config, generate_predictions, token_lengths  # noqa: E402
from trainer.demo import build_model, demo_tokenizer, make_task_rows  # noqa: E402
from trainer.model import DEMO_MODEL_SIZE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    opts = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer = demo_tokenizer()
    model = build_model(tokenizer, **DEMO_MODEL_SIZE)
    prompts = [r["prompt"] for r in make_task_rows(opts.samples, seed=11)]
    kwargs = {"max_new_tokens": opts.max_new_tokens}

    generate_predictions(model, tokenizer, prompts[:4], batch_size=4, **kwargs)  # warm-up
    start = time.perf_counter()
    single = [generate_predictions(model, tokenizer, [p], **kwargs)[0] for p in prompts]
    single_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = generate_predictions(model, tokenizer, prompts, batch_size=opts.batch_size, **kwargs)
    batched_s = time.perf_counter() - start

    assert [g.text for g in single] == [g.text for g in batched], "batched output differs"
    print(f"one at a time: {single_s:.2f} s for {opts.samples} samples")
    print(f"batches of {opts.batch_size}: {batched_s:.2f} s (same answers)")
    print(f"ratio batched/one-at-a-time: {batched_s / single_s:.3f}")
    overhead(model, tokenizer, prompts, opts)


def overhead(model, tokenizer, prompts: list[str], opts) -> None:
    """generate_predictions against bare generate on the batches it makes (sorted by length)."""
    eos = _eos_ids(model, tokenizer)
    pad = next(t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, *eos) if t is not None)
    config = _generation_config(opts.max_new_tokens, False, None, None, pad, eos)
    lengths = token_lengths(tokenizer, prompts)
    order = sorted(range(len(prompts)), key=lengths.__getitem__)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    batches = [tokenizer([prompts[i] for i in order[k:k + opts.batch_size]], return_tensors="pt", padding=True,
                         add_special_tokens=False) for k in range(0, len(order), opts.batch_size)]
    tokenizer.padding_side = side
    model.eval()

    def bare() -> None:
        with torch.no_grad():
            for enc in batches:
                model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                               generation_config=config)

    def ours() -> None:
        generate_predictions(model, tokenizer, prompts, batch_size=opts.batch_size,
                             max_new_tokens=opts.max_new_tokens)

    times: dict = {bare: [], ours: []}
    for _ in range(opts.repeats):  # interleaved: a noisy machine slows both alike
        for f in (bare, ours):
            start = time.perf_counter()
            f()
            times[f].append(time.perf_counter() - start)
    print(f"bare model.generate: {min(times[bare]):.3f} s, generate_predictions: {min(times[ours]):.3f} s "
          f"(best of {opts.repeats}, batches of {opts.batch_size})")
    print(f"ratio generate_predictions/bare generate: {min(times[ours]) / min(times[bare]):.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
