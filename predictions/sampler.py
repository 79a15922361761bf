"""Which rows a round predicts: drawn once with a fixed seed, the same in every round.

The draw depends only on its inputs (its own random.Random(seed), a sha256 prompt id), not on the
global random state or PYTHONHASHSEED, so every rank, every restart and every round agrees on it.
"""

from __future__ import annotations

import hashlib
import random
from typing import Sequence

from predictions.rows import Sample

#: Where a sample comes from: the evaluation data, the training data, or a dedicated samples file.
SOURCES = ("eval", "train", "samples")


def prompt_id(prompt: str) -> str:
    """A stable id for a rendered prompt: the first 16 hex digits of its sha256 (UTF-8)."""
    # surrogatepass: a lone surrogate from a badly decoded file still hashes instead of raising.
    return hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def draw_samples(
    examples: Sequence[tuple[int, str, str]], count: int, *, seed: int, source: str, source_id: str
) -> list[Sample]:
    """The fixed sample: `min(count, len(examples))` of the (source_index, rendered_prompt,
    ground_truth) triples, chosen by `random.Random(seed)`.

    The chosen rows are kept in source order, so sample_index follows the file (row 0 of the
    table is the earliest row of the data), which reads naturally in the platform's table.
    """
    if count < 1:
        raise ValueError(f"sample_count must be at least 1, got {count}")
    if source not in SOURCES:
        raise ValueError(f"sample source must be one of {', '.join(SOURCES)}, got {source!r}")
    # Drawing positions (not rows) keeps the draw independent of the rows' contents.
    chosen = sorted(random.Random(seed).sample(range(len(examples)), min(count, len(examples))))
    samples = []
    for sample_index, position in enumerate(chosen):
        source_index, prompt, ground_truth = examples[position]
        samples.append(Sample(
            sample_index=sample_index,
            prompt=prompt,
            ground_truth=ground_truth,
            prompt_id=prompt_id(prompt),
            source_index=source_index,
            sample_source=source,
            sample_source_id=source_id,
        ))
    return samples
