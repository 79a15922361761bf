"""How good a prediction is, against the ground truth; plus the optional validators.

All comparisons are on the texts with surrounding whitespace stripped: a trailing newline is not
a different answer. Every score is a finite float or a bool, so a row is always valid JSON.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Sequence

from predictions.rows import Scores

#: Edit distance looks at the first 10k characters of each text. That bounds its cost at about
#: 0.1 s a row (bit-parallel, below); a plain two-row DP would take ~50 s at this size.
MAX_EDIT_CHARS = 10_000
MAX_ERRORS = 5  # validation errors kept per row
MAX_ERROR_CHARS = 300


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; one code point each).

    Myers' bit-vector algorithm (Hyyrö's formulation): one column of the DP table is packed into
    Python ints, so each character of the longer text costs a dozen big-int operations instead of
    a Python loop over the shorter one — O(n·m/64) machine work instead of O(n·m) interpreter steps.
    A dependency (rapidfuzz) would do the same; this is 20 lines, checked against the plain DP in
    tests/test_scorer.py.
    """
    # The common prefix and suffix cost nothing; near-miss answers shrink to their differences.
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    a, b = a[start:], b[start:]
    while a and b and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    match: dict[str, int] = {}  # for each character, the bit set of its positions in b
    for i, c in enumerate(b):
        match[c] = match.get(c, 0) | (1 << i)
    full, last = (1 << m) - 1, 1 << (m - 1)
    plus, minus, distance = full, 0, m  # vertical deltas +1 / -1 of the current column; its last cell
    for c in a:
        eq = match.get(c, 0)
        xv = eq | minus
        xh = (((eq & plus) + plus) ^ plus) | eq
        h_plus = minus | ~(xh | plus)
        h_minus = plus & xh
        if h_plus & last:
            distance += 1
        elif h_minus & last:
            distance -= 1
        h_plus = (h_plus << 1) | 1
        h_minus <<= 1
        plus = (h_minus | ~(xv | h_plus)) & full
        minus = h_plus & xv
    return distance


def word_f1(prediction: str, truth: str) -> float:
    """F1 of the bags of lowercase words (split on whitespace); 1.0 when both are empty."""
    p, t = Counter(prediction.lower().split()), Counter(truth.lower().split())
    if not p and not t:
        return 1.0
    common = sum((p & t).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(t.values())
    return 2 * precision * recall / (precision + recall)


def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _validate(prediction: str, json_parse: bool, json_schema: dict | None) -> tuple[bool | None, list[str] | None, str | None]:
    """(pass, errors, kind); all None when no validator is configured. A schema implies parsing."""
    if not json_parse and json_schema is None:
        return None, None, None
    kind = "json_schema" if json_schema is not None else "json_parse"
    try:
        # Strict JSON: Python accepts NaN and Infinity, the JSON spec (and the platform's JSON.parse) do not.
        value = json.loads(prediction, parse_constant=_strict_constant)
    except json.JSONDecodeError as e:
        return False, [f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"], kind
    except ValueError as e:
        return False, [f"not valid JSON: {e}"], kind
    except RecursionError:  # "[[[[…" from a looping model
        return False, ["not valid JSON: nested too deeply to parse"], kind
    if json_schema is None:
        return True, [], kind
    import jsonschema  # only jobs with a schema pay for the import

    validator = jsonschema.validators.validator_for(json_schema)(json_schema)  # honours "$schema"
    try:
        found = list(validator.iter_errors(value))
    except RecursionError:
        return False, ["too deeply nested to validate"], kind
    shown = found if len(found) <= MAX_ERRORS else found[: MAX_ERRORS - 1]  # the last line counts the rest
    errors = [_clip(f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}") for e in shown]
    if len(shown) < len(found):
        errors.append(f"… and {len(found) - len(shown)} more")
    return not found, errors, kind


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def score(prediction: str, ground_truth: str, *, json_parse: bool = False, json_schema: dict | None = None) -> Scores:
    """Scores of one prediction, both texts stripped of surrounding whitespace first.

    - exact_match: the stripped texts are equal;
    - char_error_rate: edit distance / length of the ground truth (at least 1), on the first
      MAX_EDIT_CHARS characters of each;
    - length_ratio: len(prediction) / len(ground truth); with an empty ground truth, 1.0 when the
      prediction is empty too, else the prediction's length (never inf: it must stay JSON);
    - word_overlap: F1 of the bags of lowercase words;
    - validation_*: json_parse parses the prediction as JSON; json_schema (already loaded)
      also validates it. None when neither is asked for; errors are at most MAX_ERRORS lines of
      at most MAX_ERROR_CHARS characters each, the path first ("items/0/age: …").
    """
    p, t = prediction.strip(), ground_truth.strip()
    p_cut, t_cut = p[:MAX_EDIT_CHARS], t[:MAX_EDIT_CHARS]
    length_ratio = len(p) / len(t) if t else (1.0 if not p else float(len(p)))
    passed, errors, kind = _validate(p, json_parse, json_schema)
    return Scores(
        exact_match=p == t,
        char_error_rate=levenshtein(p_cut, t_cut) / max(1, len(t_cut)),
        length_ratio=length_ratio,
        word_overlap=word_f1(p, t),
        validation_pass=passed,
        validation_errors=errors,
        validation_kind=kind,
    )


def score_many(predictions: Sequence[str], ground_truths: Sequence[str], **validators: Any) -> list[Scores]:
    """`score` for each (prediction, ground truth) pair; the sequences must be the same length.
    `validators` are score's keyword arguments (json_parse, json_schema)."""
    return [score(p, t, **validators) for p, t in zip(predictions, ground_truths, strict=True)]


def mean_scores(scores: Sequence[Scores]) -> dict[str, float]:
    """The round's means, for its log line: exact match rate, mean CER, mean word overlap and, when
    validators ran, the pass rate. Empty for an empty round."""
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
    assert all(math.isfinite(v) for v in means.values()), means
    return means
