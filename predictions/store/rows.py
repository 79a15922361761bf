"""The shape of one prediction: what the sampler, generator and scorer produce, and the row
every writer stores.

The row's keys are the columns of the platform's `training_predictions` (../shared/PLATFORM.md
§1) in the platform's types, plus the columns this image adds (sql/). `id` and `created_at` are
left to the database. A row is unique on (job_id, step, sample_index).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from predictions.metrics import PLATFORM_METRICS

#: The platform's columns (its five migrations) and their Postgres types, in its table's order.
PLATFORM_COLUMNS: dict[str, str] = {
    "job_id": "text",
    "user_id": "uuid",
    "epoch": "integer",  # int(state.epoch): the UI groups and filters by it
    "step": "integer",
    "sample_index": "integer",
    "prompt": "text",
    "ground_truth": "text",
    "prediction": "text",
    "exact_match": "double precision",  # 1.0 / 0.0
    "char_error_rate": "double precision",
    "length_ratio": "double precision",
    "word_overlap": "double precision",
    "prompt_id": "text",
    "source_index": "integer",
    "sample_source": "text",
    "sample_source_id": "text",
    "prompt_tokens": "integer",
    "completion_tokens": "integer",
    "total_tokens": "integer",
    "latency_ms": "integer",
    "max_new_tokens": "integer",
    "do_sample": "boolean",
    "validation_pass": "boolean",
    "validation_errors": "jsonb",
    "validation_kind": "text",
}

#: The columns this image adds (sql/20261130000000_platform_contract.sql); nullable, so the
#: platform's own writer, which never sends them, still inserts.
ADDED_COLUMNS: dict[str, str] = {
    "epoch_progress": "double precision",  # the fractional epoch of the round (state.epoch)
    "temperature": "double precision",
    "top_p": "double precision",
    "stop_reason": "text",  # eos | length
    "text_truncated": "boolean",
    "metrics": "jsonb",  # registered metrics beyond the platform's four: {"word_f1": 0.5}
    "generation_error": "text",  # why a sample failed to generate; null when it generated
}

COLUMN_TYPES: dict[str, str] = {**PLATFORM_COLUMNS, **ADDED_COLUMNS}

#: Columns the writers send, in table order. `id` and `created_at` are filled by the database.
ROW_COLUMNS: tuple[str, ...] = tuple(COLUMN_TYPES)

#: Without these a row means nothing to the platform's UI: a table lacking one is refused at
#: preflight. Every other column is sent when the table has it, and kept in the spool otherwise.
NEEDED_COLUMNS: tuple[str, ...] = ("job_id", "user_id", "epoch", "step", "sample_index", "prompt", "prediction")

#: The conflict target: a round is keyed by global step, a sample by its index in the fixed sample.
CONFLICT_KEY: tuple[str, ...] = ("job_id", "step", "sample_index")

#: The namespace of row ids (any fixed UUID; changing it would make replays of old spools store
#: their rows again): a row's primary key `id` is uuid5 of its CONFLICT_KEY in this namespace.
ROW_ID_NAMESPACE = uuid.UUID("6f1c2a7e-3b5d-4e8a-9c0f-2d4b6a8e1f30")


def row_id(job_id: Any, step: Any, sample_index: Any) -> str:
    """The row's primary key, derived from (job_id, step, sample_index): the same row always gets the
    same `id`, so an insert sent twice (a retry whose first try committed late, a replay, two writers
    at once) is a conflict on the platform's primary key, never a second row — on the table as the
    platform deployed it, which has no unique key on the three columns."""
    return str(uuid.uuid5(ROW_ID_NAMESPACE, f"{job_id}\x1f{int(step)}\x1f{int(sample_index)}"))

#: Text columns: Postgres text cannot hold NUL and each is capped (see predictions/store/sanitize.py).
TEXT_COLUMNS: tuple[str, ...] = ("prompt", "ground_truth", "prediction")

#: Float columns: NaN / inf are not valid JSON and are stored as NULL.
FLOAT_COLUMNS: tuple[str, ...] = tuple(c for c, t in COLUMN_TYPES.items() if t == "double precision")

#: The platform's `sample_source` values: the job's dataset, or a dedicated prediction set file.
SampleSource = Literal["dataset", "prediction_set"]
StopReason = Literal["eos", "length"]


@dataclass(frozen=True)
class Sample:
    """One prompt of the fixed sample, the same in every round."""

    sample_index: int  # position in the fixed sample, 0..n-1
    prompt: str  # the rendered prompt (chat template applied), exactly what the model sees
    ground_truth: str
    prompt_id: str  # sha256 of the source row's messages (or prompt), as the platform computes it
    source_index: int  # the row's index in its source file
    sample_source: SampleSource
    sample_source_id: str  # the source file's name (never a signed URL: it may hold a token)


@dataclass(frozen=True)
class Generation:
    """What the model answered for one sample, and what it cost. `error` set: it failed (text '')."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float  # the batch's wall time divided by its size; stored rounded (integer column)
    stop_reason: StopReason | None
    max_new_tokens: int
    do_sample: bool
    temperature: float | None
    top_p: float | None
    error: str | None = None


@dataclass(frozen=True)
class Scores:
    """Every registered metric's value (empty without a ground truth or for a failed sample),
    and the validators' verdict."""

    values: dict[str, float] = field(default_factory=dict)
    validation_pass: bool | None = None  # None when no validator is configured
    validation_errors: list[dict[str, Any]] | None = None  # [{validator, message, detail}], None if none
    validation_kind: str | None = None  # "json_parse" | "json_parse+json_schema" | None


def make_row(
    *,
    job_id: str,
    user_id: str | None,
    epoch: float,
    step: int,
    sample: Sample,
    generation: Generation,
    scores: Scores,
) -> dict[str, Any]:
    """Flatten one prediction into a table row (keys = ROW_COLUMNS). `epoch` is the Trainer's
    fractional epoch: the row's `epoch` is its integer part, as the platform's pods wrote it."""
    if generation.error is not None:
        # A sample that failed to generate has no answer to score: its scores stay NULL, so the
        # platform's averages (of non-null values) are not dragged down by a non-answer.
        scores = Scores()
    extra = {k: v for k, v in scores.values.items() if k not in PLATFORM_METRICS}
    row: dict[str, Any] = {
        "job_id": job_id,
        "user_id": user_id,
        "epoch": int(epoch),
        "step": int(step),
        "sample_index": sample.sample_index,
        "prompt": sample.prompt,
        "ground_truth": sample.ground_truth,
        "prediction": generation.text,
        **{name: scores.values.get(name) for name in PLATFORM_METRICS},
        "prompt_id": sample.prompt_id,
        "source_index": sample.source_index,
        "sample_source": sample.sample_source,
        "sample_source_id": sample.sample_source_id,
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.prompt_tokens + generation.completion_tokens,
        "latency_ms": _round(generation.latency_ms),
        "max_new_tokens": int(generation.max_new_tokens),
        "do_sample": generation.do_sample,
        "validation_pass": scores.validation_pass,
        "validation_errors": scores.validation_errors,
        "validation_kind": scores.validation_kind,
        "epoch_progress": float(epoch),
        "temperature": generation.temperature,
        "top_p": generation.top_p,
        "stop_reason": generation.stop_reason,
        "text_truncated": False,
        "metrics": extra or None,
        "generation_error": generation.error,
    }
    assert tuple(row) == ROW_COLUMNS, "make_row and ROW_COLUMNS drifted"
    return row


def _round(value: float | None) -> int | None:
    return int(round(value)) if value is not None and math.isfinite(value) else None


# -- spools written by earlier versions of this image ---------------------------------------------

_OLD_SOURCES = {"eval": "dataset", "train": "dataset", "samples": "prediction_set"}


def upgrade_row(row: dict[str, Any]) -> dict[str, Any]:
    """A spool row of an earlier image version in today's types and meanings (a replay sends it).

    Earlier rows had a fractional epoch, a boolean exact_match, float latency, validation errors
    as plain strings, kind "json_schema" and sources eval / train / samples. Their scores keep
    their old values (the scores are not recomputed: README, "Scores and the platform's pods").
    """
    out = dict(row)
    epoch = out.get("epoch")
    if isinstance(epoch, float):
        out.setdefault("epoch_progress", epoch)
        out["epoch"] = int(epoch) if math.isfinite(epoch) else None
    if isinstance(out.get("exact_match"), bool):
        out["exact_match"] = 1.0 if out["exact_match"] else 0.0
    if isinstance(out.get("latency_ms"), float):
        out["latency_ms"] = _round(out["latency_ms"])
    if out.get("sample_source") in _OLD_SOURCES:
        out["sample_source"] = _OLD_SOURCES[out["sample_source"]]
    errors = out.get("validation_errors")
    kind = out.get("validation_kind")
    if kind == "json_schema":
        out["validation_kind"] = kind = "json_parse+json_schema"
    if isinstance(errors, list) and any(isinstance(e, str) for e in errors):
        validator = "json_schema" if kind == "json_parse+json_schema" else "json_parse"
        out["validation_errors"] = [
            {"validator": validator, "message": e, "detail": None} if isinstance(e, str) else e for e in errors
        ] or None
    elif errors == []:
        out["validation_errors"] = None
    if out.get("prediction") is None:
        out["prediction"] = ""
    return out

