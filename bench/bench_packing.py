"""What packing buys SFT: the same length-skewed rows (most short, a few long, as real chat data)
trained with and without TRL's best-fit-decreasing padding-free packing, on the same small model,
for the same tokens. Prints the training throughput (real tokens per second) of each and, last,
the ratio packed / unpacked, measured in one run.

    python bench/bench_packing.py [--rows 384] [--max-length 128] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from trainer.demo import WORDS, build_model, build_tokenizer  # noqa: E402


def skewed_rows(count: int, max_length: int, seed: int = 0) -> list[list[int]]:
    """Word sequences whose lengths follow a long tail: 80 % of 4-16 words, 20 % up to max_length."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        n = rng.randint(4, 16) if rng.random() < 0.8 else rng.randint(max_length // 2, max_length - 1)
        out.append(" ".join(rng.choice(WORDS) for _ in range(n)))
    return out


def train(texts, tokenizer, *, packing: bool, max_length: int, batch_size: int) -> tuple[float, int]:
    """(seconds, real tokens) of one epoch over `texts`."""
    ids = [tokenizer(t, add_special_tokens=False).input_ids + [tokenizer.eos_token_id] for t in texts]
    data = Dataset.from_list([{"input_ids": i, "labels": i} for i in ids])
    model = build_model(tokenizer, hidden_size=256, layers=4, heads=4)
    model.config._attn_implementation = "sdpa"
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(output_dir=out, per_device_train_batch_size=batch_size, num_train_epochs=1, max_length=max_length,
                         packing=packing, packing_strategy="bfd", padding_free=packing, use_cpu=True, bf16=False,
                         gradient_checkpointing=False, report_to="none", save_strategy="no", logging_steps=10_000,
                         disable_tqdm=True, seed=0, dataloader_drop_last=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return seconds, sum(map(len, ids))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=384)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    opts = parser.parse_args()
    torch.set_num_threads(2)
    hf_logging.set_verbosity_error()
    texts = skewed_rows(opts.rows, opts.max_length)
    tokenizer = build_tokenizer([" ".join(WORDS)])
    results = {}
    for packing in (False, True):
        seconds, tokens = train(texts, tokenizer, packing=packing, max_length=opts.max_length,
                                batch_size=opts.batch_size)
        results[packing] = tokens / seconds
        print(f"{'packed' if packing else 'unpacked'}: {tokens} tokens in {seconds:.1f}s, {tokens / seconds:.0f} tokens/s")
    print(f"packing: {opts.rows} length-skewed rows, packed over unpacked training throughput: "
          f"ratio {results[True] / results[False]:.2f}")


if __name__ == "__main__":
    main()
