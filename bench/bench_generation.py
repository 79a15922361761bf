"""What batching buys a prediction round: the same prompts generated in batches vs one at a
time, on the demo model (fresh weights, so every answer runs to max_new_tokens). Prints the
ratio of the two, measured in one run, and checks the answers are the same.

    python bench/bench_generation.py [--samples 64] [--batch-size 16] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from predictions.generator import generate_predictions  # noqa: E402
from trainer.demo import build_model, demo_tokenizer, make_task_rows  # noqa: E402
from trainer.model import DEMO_MODEL_SIZE  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=16)
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


if __name__ == "__main__":
    main()
