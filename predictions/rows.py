"""The shape of one prediction: what the sampler, generator and scorer produce, and the row
every writer stores.

The row's keys are the columns of `training_predictions` (see sql/ and ../shared/ARCHITECTURE.md);
`id` and `created_at` are left to the database. A row is unique on (job_id, step, sample_index).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

#: Columns the writers send, in table order. `id` and `created_at` are filled by the database.
ROW_COLUMNS: tuple[str, ...] = (
    "job_id",
    "user_id",
    "epoch",
    "step",
    "sample_index",
    "prompt",
    "ground_truth",
    "prediction",
    "prompt_id",
    "source_index",
    "sample_source",
    "sample_source_id",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "latency_ms",
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "stop_reason",
    "exact_match",
    "char_error_rate",
    "length_ratio",
    "word_overlap",
    "validation_pass",
    "validation_errors",
    "validation_kind",
    "text_truncated",
    "generation_error",
)

#: The conflict target: a round is keyed by global step, a sample by its index in the fixed sample.
CONFLICT_KEY: tuple[str, ...] = ("job_id", "step", "sample_index")

#: Text columns: Postgres text cannot hold NUL and each is capped (see predictions/sanitize.py).
TEXT_COLUMNS: tuple[str, ...] = ("prompt", "ground_truth", "prediction")

#: Float scores: NaN / inf are not valid JSON and are stored as NULL.
FLOAT_COLUMNS: tuple[str, ...] = (
    "epoch",
    "latency_ms",
    "temperature",
    "top_p",
    "char_error_rate",
    "length_ratio",
    "word_overlap",
)

StopReason = Literal["eos", "length"]


@dataclass(frozen=True)
class Sample:
    """One prompt of the fixed sample, the same in every round."""

    sample_index: int  # position in the fixed sample, 0..n-1
    prompt: str  # the rendered prompt (chat template applied), exactly what the model sees
    ground_truth: str
    prompt_id: str  # a hash of the rendered prompt: stable across rounds, restarts and jobs
    source_index: int  # the row's index in its source file
    sample_source: str  # "eval" | "train" | "samples"
    sample_source_id: str  # the source file's name (never a signed URL: it may hold a token)


@dataclass(frozen=True)
class Generation:
    """What the model answered for one sample, and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float  # the batch's wall time divided by its size
    stop_reason: StopReason
    max_new_tokens: int
    do_sample: bool
    temperature: float | None
    top_p: float | None


@dataclass(frozen=True)
class Scores:
    exact_match: bool
    char_error_rate: float
    length_ratio: float
    word_overlap: float
    validation_pass: bool | None  # None when no validator is configured
    validation_errors: list[str] | None
    validation_kind: str | None  # "json_parse" | "json_schema" | None


def make_row(
    *,
    job_id: str,
    user_id: str,
    epoch: float,
    step: int,
    sample: Sample,
    generation: Generation,
    scores: Scores,
    generation_error: str | None = None,
) -> dict[str, Any]:
    """Flatten one prediction into a table row (keys = ROW_COLUMNS). `generation_error`: why the
    sample could not be generated (its prediction is then '')."""
    row: dict[str, Any] = {
        "job_id": job_id,
        "user_id": user_id,
        "epoch": float(epoch),
        "step": int(step),
        "sample_index": sample.sample_index,
        "prompt": sample.prompt,
        "ground_truth": sample.ground_truth,
        "prediction": generation.text,
        "prompt_id": sample.prompt_id,
        "source_index": sample.source_index,
        "sample_source": sample.sample_source,
        "sample_source_id": sample.sample_source_id,
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        "latency_ms": generation.latency_ms,
        "max_new_tokens": generation.max_new_tokens,
        "do_sample": generation.do_sample,
        "temperature": generation.temperature,
        "top_p": generation.top_p,
        "stop_reason": generation.stop_reason,
        "exact_match": scores.exact_match,
        "char_error_rate": scores.char_error_rate,
        "length_ratio": scores.length_ratio,
        "word_overlap": scores.word_overlap,
        "validation_pass": scores.validation_pass,
        "validation_errors": scores.validation_errors,
        "validation_kind": scores.validation_kind,
        "text_truncated": False,
        "generation_error": generation_error,
    }
    assert tuple(row) == ROW_COLUMNS, "make_row and ROW_COLUMNS drifted"
    return row
