"""One rank of tests/test_rank_split.py's FSDP2 test (started by torch.distributed.run, gloo).

Rank 0 first makes the reference: a round on the unsharded model, alone. Then every rank shards
the same weights with FSDP2 and runs three rounds in lockstep; the second fails on rank 1 before
the lockstep (the test hook). Rank 0 writes what it saw to the JSON file named by argv[1].
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from predictions.rounds import PredictionRounds, RankGroup
from predictions.sampler import draw_samples
from trainer.config.schema import PredictionsConfig
from trainer.demo import build_model, build_word_tokenizer, make_task_rows


class Rows:
    """A writer that keeps the rows in memory."""

    def __init__(self):
        self.rows = []

    def write(self, rows):
        self.rows += rows


def trained_model(tokenizer, rows):
    """A few steps on the reversal task, so that answers depend on the prompt; rank 0's weights
    on every rank."""
    model = build_model(tokenizer, hidden_size=32, layers=2, heads=2, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    texts = [f"{r['prompt']} {r['completion']} {tokenizer.eos_token}" for r in rows]
    for step in range(40):
        enc = tokenizer(texts[step * 8 % len(texts):][:8], return_tensors="pt", padding=True, add_special_tokens=False)
        model(**enc, labels=enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for p in model.parameters():
        dist.broadcast(p.data, src=0)
    return model


def main(result_path: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    rows = make_task_rows(200, seed=4)
    tokenizer = build_word_tokenizer([r["prompt"] + " " + r["completion"] for r in rows])
    model = trained_model(tokenizer, rows)
    samples = draw_samples([(i, r["prompt"], r["completion"]) for i, r in enumerate(rows)], 5,
                           seed=0, source="train", source_id="rows")
    settings = PredictionsConfig(enabled=True, sample_count=5, max_new_tokens=6, batch_size=1)

    def compared(written):
        return [[r["sample_index"], r["prediction"], r["completion_tokens"], r["stop_reason"]] for r in written]

    reference = None
    if rank == 0:
        alone = Rows()
        PredictionRounds(samples, tokenizer, settings, job_id="j", user_id=None,
                         local=alone).run(copy.deepcopy(model), step=0, epoch=0.0)
        reference = compared(alone.rows)

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    sharded = isinstance(model.model.embed_tokens.weight, DTensor)
    written = Rows() if rank == 0 else None
    rounds = PredictionRounds(samples, tokenizer, settings, job_id="j", user_id=None, local=written,
                              group=RankGroup(rank, 2, synced=True), test_fault=(1, 2))
    for step in (1, 2, 3):
        rounds.run(model, step=step, epoch=0.0)

    if rank == 0:
        Path(result_path).write_text(json.dumps({
            "sharded": sharded,
            "calls": rounds.calls,
            "shares": [len(rounds.share), 5 - len(rounds.share)],
            "rounds": [[r.round, r.ok] for r in rounds.results],
            "errors": [r.error for r in rounds.results if not r.ok],
            "reference_rows": reference,
            # Rounds 1 and 3 ran on the same weights (no training between): both must match.
            "sharded_rows": compared([r for r in written.rows if r["step"] == 1]),
            "third_round_same": compared([r for r in written.rows if r["step"] == 3]) == reference,
        }))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
