"""How good a prediction is, against the ground truth; plus the optional validators.

Scoring is the platform's (PLATFORM.md §5): both texts stripped of surrounding whitespace and
lower-cased, then every metric of predictions/metrics.py's REGISTRY applied. No ground truth (or
a sample that failed to generate, predictions/store/rows.py): no scores, and the columns stay NULL, as on the platform.
Every score is a finite float, so a row is always valid JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from predictions.metrics import REGISTRY, levenshtein  # noqa: F401 — levenshtein re-exported for callers
from predictions.store.rows import Scores

MAX_ERRORS = 5  # validation errors kept per row
MAX_ERROR_CHARS = 300

PARSE_FAILED = "Prediction is not valid JSON"  # the platform validators' messages, verbatim
SCHEMA_FAILED = "JSONSchema validation failed"


def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _error(validator: str, message: str, detail: str) -> dict[str, Any]:
    return {"validator": validator, "message": message, "detail": _clip(detail)}


def _validate(prediction: str, json_parse: bool, json_schema: dict | None) -> tuple[bool | None, list | None, str | None]:
    """(pass, errors, kind) as the platform's validators report them: kind "json_parse" or
    "json_parse+json_schema" (a schema implies parsing), errors a list of {validator, message,
    detail} or None when there are none; all None when no validator is configured."""
    if not json_parse and json_schema is None:
        return None, None, None
    kind = "json_parse+json_schema" if json_schema is not None else "json_parse"
    try:
        # Strict JSON: Python accepts NaN and Infinity, the JSON spec (and the platform's JSON.parse) do not.
        value = json.loads(prediction, parse_constant=_strict_constant)
    except json.JSONDecodeError as e:
        return False, [_error("json_parse", PARSE_FAILED, f"{e.msg} at line {e.lineno} column {e.colno}")], kind
    except ValueError as e:
        return False, [_error("json_parse", PARSE_FAILED, str(e))], kind
    except RecursionError:  # "[[[[…" from a looping model
        return False, [_error("json_parse", PARSE_FAILED, "nested too deeply to parse")], kind
    if json_schema is None:
        return True, None, kind
    import jsonschema  # only jobs with a schema pay for the import

    validator = jsonschema.validators.validator_for(json_schema)(json_schema)  # honours "$schema"
    try:
        found = list(validator.iter_errors(value))
    except RecursionError:
        return False, [_error("json_schema", SCHEMA_FAILED, "too deeply nested to validate")], kind
    shown = found if len(found) <= MAX_ERRORS else found[: MAX_ERRORS - 1]  # the last one counts the rest
    errors = [_error("json_schema", SCHEMA_FAILED, f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
              for e in shown]
    if len(shown) < len(found):
        errors.append(_error("json_schema", SCHEMA_FAILED, f"… and {len(found) - len(shown)} more"))
    return not found, errors or None, kind


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def score(prediction: str, ground_truth: str | None, *, json_parse: bool = False,
          json_schema: dict | None = None) -> Scores:
    """Scores of one prediction: every registered metric on the stripped, lower-cased texts (none
    when the ground truth is empty), and the validators on the stripped prediction."""
    p, t = prediction.strip(), (ground_truth or "").strip()
    values: dict[str, float] = {}
    if ground_truth:  # the platform's test: a truth of only whitespace is still scored
        p_clean, t_clean = p.lower(), t.lower()
        values = {name: float(m.fn(p_clean, t_clean)) for name, m in REGISTRY.items()}
    passed, errors, kind = _validate(p, json_parse, json_schema)
    return Scores(values, passed, errors, kind)


def score_many(predictions: Sequence[str], ground_truths: Sequence[str], **validators: Any) -> list[Scores]:
    """`score` for each (prediction, ground truth) pair; the sequences must be the same length.
    `validators` are score's keyword arguments (json_parse, json_schema)."""
    return [score(p, t, **validators) for p, t in zip(predictions, ground_truths, strict=True)]


def mean_scores(scores: Sequence[Scores]) -> dict[str, float]:
    """The round's means: each registered metric over the samples that have it (as the platform's
    trends average the non-null values) and, when validators ran, the pass rate."""
    means: dict[str, float] = {}
    for name in REGISTRY:
        values = [s.values[name] for s in scores if name in s.values]
        if values:
            means[name] = sum(values) / len(values)
    validated = [s.validation_pass for s in scores if s.validation_pass is not None]
    if validated:
        means["validation_pass"] = sum(validated) / len(validated)
    assert all(math.isfinite(v) for v in means.values()), means
    return means
