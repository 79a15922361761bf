"""How good a prediction is, against the ground truth; plus the optional validators.

All comparisons are on the texts with surrounding whitespace stripped: a trailing newline is not
a different answer.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Sequence

from predictions.rows import Scores

MAX_EDIT_CHARS = 10_000  # edit distance is O(n·m): longer texts are compared on their first 10k chars
MAX_ERRORS = 5  # validation errors kept per row
MAX_ERROR_CHARS = 300


def levenshtein(a: str, b: str) -> int:
    """Edit distance, two rows of the DP table at a time."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def word_f1(prediction: str, truth: str) -> float:
    """F1 of the bags of lowercase words; 1.0 when both are empty."""
    p, t = Counter(prediction.lower().split()), Counter(truth.lower().split())
    if not p and not t:
        return 1.0
    common = sum((p & t).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(t.values())
    return 2 * precision * recall / (precision + recall)


def _validate(prediction: str, json_parse: bool, json_schema: dict | None) -> tuple[bool | None, list[str] | None, str | None]:
    if not json_parse and json_schema is None:
        return None, None, None
    kind = "json_schema" if json_schema is not None else "json_parse"
    try:
        value = json.loads(prediction)
    except json.JSONDecodeError as e:
        return False, [f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"], kind
    if json_schema is None:
        return True, [], kind
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema)
    errors = [
        (f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")[:MAX_ERROR_CHARS]
        for e in validator.iter_errors(value)
    ]
    return not errors, errors[:MAX_ERRORS], kind


def score(prediction: str, ground_truth: str, *, json_parse: bool = False, json_schema: dict | None = None) -> Scores:
    """Scores of one prediction.

    - exact_match: equal after stripping surrounding whitespace;
    - char_error_rate: edit distance / length of the ground truth (at least 1);
    - length_ratio: len(prediction) / len(ground truth); with an empty ground truth, 1.0 when the
      prediction is empty too, else the prediction's length (never inf: it must stay JSON);
    - word_overlap: F1 of the bags of lowercase words.
    """
    p, t = prediction.strip(), ground_truth.strip()
    distance = levenshtein(p[:MAX_EDIT_CHARS], t[:MAX_EDIT_CHARS])
    length_ratio = len(p) / len(t) if t else (1.0 if not p else float(len(p)))
    passed, errors, kind = _validate(p, json_parse, json_schema)
    return Scores(
        exact_match=p == t,
        char_error_rate=distance / max(1, len(t[:MAX_EDIT_CHARS])),
        length_ratio=length_ratio,
        word_overlap=word_f1(p, t),
        validation_pass=passed,
        validation_errors=errors,
        validation_kind=kind,
    )


def score_many(predictions: Sequence[str], ground_truths: Sequence[str], **validators: Any) -> list[Scores]:
    return [score(p, t, **validators) for p, t in zip(predictions, ground_truths, strict=True)]


def mean_scores(scores: Sequence[Scores]) -> dict[str, float]:
    """The round's means, for its log line: exact match rate, mean CER, mean word overlap and, when
    validators ran, the pass rate."""
    if not scores:
        return {}
    n = len(scores)
    means = {
        "exact_match": sum(s.exact_match for s in scores) / n,
        "char_error_rate": sum(s.char_error_rate for s in scores) / n,
        "word_overlap": sum(s.word_overlap for s in scores) / n,
    }
    validated = [s.validation_pass for s in scores if s.validation_pass is not None]
    if validated:
        means["validation_pass"] = sum(validated) / len(validated)
    assert all(math.isfinite(v) for v in means.values())
    return means
