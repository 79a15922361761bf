"""Which rows a round predicts: drawn once with a fixed seed, the same in every round.

The draw depends only on its inputs (random.Random(seed), a sha256 prompt id), not on global
random state or PYTHONHASHSEED, so every rank, every restart and every round agrees on it.
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence

from predictions.rows import Sample


def prompt_id(prompt: str) -> str:
    """A stable id for a rendered prompt: the first 16 hex digits of its sha256."""
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def draw_samples(
    examples: Sequence[tuple[int, str, str]], count: int, *, seed: int, source: str, source_id: str
) -> list[Sample]:
    """`min(count, len(examples))` samples from (source_index, rendered_prompt, ground_truth)
    triples, kept in source order (so sample_index follows the file, which reads naturally)."""
    assert count > 0, "sample_count is validated to be positive"
    chosen = sorted(random.Random(seed).sample(range(len(examples)), min(count, len(examples))))
    return [
        Sample(
            sample_index=i,
            prompt=examples[k][1],
            ground_truth=examples[k][2],
            prompt_id=prompt_id(examples[k][1]),
            source_index=examples[k][0],
            sample_source=source,
            sample_source_id=source_id,
        )
        for i, k in enumerate(chosen)
    ]
