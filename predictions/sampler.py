"""Which rows a round predicts: drawn once with a fixed seed, the same in every round.

The draw depends only on its inputs (its own random.Random(seed), a sha256 prompt id), not on the
global random state or PYTHONHASHSEED, so every rank, every restart and every round agrees on it.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any, Sequence

from predictions.store.rows import Sample

#: Where a sample comes from (this image's names), and the platform's `sample_source` for each:
#: the job's data (evaluation or training rows) is "dataset", a samples file is "prediction_set".
SOURCES = {"eval": "dataset", "train": "dataset", "samples": "prediction_set"}


def prompt_id(source: Any) -> str:
    """The platform's prompt id (lib/training/predictions_sampler.py `_compute_prompt_id`): the
    sha256 hex of a source row's `messages` as `json.dumps(messages, ensure_ascii=False,
    sort_keys=True)`, else of its `prompt` text; `source` may also be the text itself. It depends
    on the data only, not on the model's chat template, so the same sample has the same id in
    every job and for every model.

    Rows in instruction / input / output form differ from the platform on purpose: its pods hashed
    `input`, which is empty in most such rows (every sample got one id); here the id hashes
    {"instruction", "input"} canonically.
    """
    if isinstance(source, dict):
        if source.get("messages") is not None:
            canonical = json.dumps(source["messages"], ensure_ascii=False, sort_keys=True)
        elif isinstance(source.get("prompt"), str):
            canonical = source["prompt"]
        elif isinstance(source.get("instruction"), str):
            canonical = json.dumps({"instruction": source["instruction"], "input": source.get("input") or ""},
                                   ensure_ascii=False, sort_keys=True)
        else:
            canonical = json.dumps(source, ensure_ascii=False, sort_keys=True, default=str)
    else:
        canonical = str(source)
    # surrogatepass: a lone surrogate from a badly decoded file still hashes instead of raising.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def draw_samples(
    examples: Sequence[tuple[int, str, str]],
    count: int,
    *,
    seed: int,
    source: str,
    source_id: str,
    source_rows: Sequence[Any] | None = None,
) -> list[Sample]:
    """The fixed sample: `min(count, len(examples))` of the (source_index, rendered_prompt,
    ground_truth) triples, chosen by `random.Random(seed)`.

    `source_rows`, the source file's rows as read (indexed by source_index), give the prompt ids
    the platform's way; without them the id hashes the rendered prompt. The chosen rows are kept
    in source order, so sample_index follows the file (row 0 of the table is the earliest row of
    the data), which reads naturally in the platform's table.
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
        row = source_rows[source_index] if source_rows is not None and source_index < len(source_rows) else None
        samples.append(Sample(
            sample_index=sample_index,
            prompt=prompt,
            ground_truth=ground_truth,
            prompt_id=prompt_id(row if row is not None else prompt),
            source_index=source_index,
            sample_source=SOURCES[source],
            sample_source_id=source_id,
        ))
    return samples
