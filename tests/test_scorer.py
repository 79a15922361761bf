"""The scorer and the metric registry, on hand-computed examples and against the platform's
own scorer (lib/training/predictions_scorer.py of the platform, restated below)."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest

from predictions import metrics
from predictions.metrics import REGISTRY, levenshtein, word_f1
from predictions.scorer import MAX_ERROR_CHARS, MAX_ERRORS, mean_scores, score, score_many
from predictions.store.rows import Generation, Sample, make_row


def plain_levenshtein(a: str, b: str) -> int:
    """The textbook two-row DP: the reference the fast one must agree with."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def platform_scores(prediction: str, truth: str) -> dict:
    """The platform pods' PredictionsScorer.score_prediction, restated: the reference for the
    four columns an old job's rows hold."""
    if not truth:
        return {}
    p, t = prediction.strip().lower(), truth.strip().lower()
    words = set(p.split())
    return {
        "exact_match": 1.0 if p == t else 0.0,
        "char_error_rate": min(1.0, plain_levenshtein(p, t) / max(len(t), 1)),
        "length_ratio": len(p) / max(len(t), 1) if t else 0.0,
        "word_overlap": len(words & set(t.split())) / len(words) if words else 0.0,
    }


def test_the_four_columns_are_the_platforms_scores():
    rng = random.Random(0)
    cases = [("Paris", "paris"), (" blue cat red\n", "blue cat red"), ("red red dog", "Red cat"),
             ("", "abc"), ("kitten", "sitting"), ("a much longer wrong answer", "yes"), ("x", "")]
    cases += [("".join(rng.choice("aB c") for _ in range(rng.randint(0, 12))),
               "".join(rng.choice("ab C") for _ in range(rng.randint(0, 12)))) for _ in range(300)]
    for prediction, truth in cases:
        values = score(prediction, truth).values
        expected = platform_scores(prediction, truth)
        assert {k: values[k] for k in expected} == pytest.approx(expected), (prediction, truth)
        if not expected:
            assert values == {}  # no ground truth: no scores, NULL columns, as on the platform


def test_exact_match_is_a_float_on_lowercased_stripped_text():
    assert score(" Blue cat RED\n", "blue cat red").values["exact_match"] == 1.0
    assert score("blue  cat", "blue cat").values["exact_match"] == 0.0  # inner whitespace counts


def test_char_error_rate_is_clamped_and_word_overlap_is_the_share_of_predicted_words():
    assert score("a much longer wrong answer", "yes").values["char_error_rate"] == 1.0
    assert score("red red dog", "red cat").values["word_overlap"] == pytest.approx(1 / 2)  # {red, dog}: red found
    assert score("", "red").values["word_overlap"] == 0.0


def test_levenshtein_by_hand():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("abc", "abc") == 0 and levenshtein("ab", "ba") == 2
    assert levenshtein("flaw", "lawn") == 2 and levenshtein("naïve", "naive") == 1
    assert levenshtein("🤖a", "a🤖") == 2  # one code point is one character


def test_levenshtein_agrees_with_the_plain_dp():
    rng = random.Random(0)
    for _ in range(2000):
        a = "".join(rng.choice("abc ") for _ in range(rng.randint(0, 14)))
        b = "".join(rng.choice("abcdé") for _ in range(rng.randint(0, 14)))
        assert levenshtein(a, b) == plain_levenshtein(a, b), (a, b)
    a = "".join(rng.choice("abcdefgh ") for _ in range(300))
    b = "".join(rng.choice("abcdefgh ") for _ in range(200))
    assert levenshtein(a, b) == plain_levenshtein(a, b)  # wider than a machine word


def interpreter_steps(fn, *args) -> int:
    """The lines of predictions/ that the interpreter runs while `fn(*args)` does: its work,
    counted rather than timed (a loaded machine changes the time, not the count)."""
    count = 0
    package = str(Path(metrics.__file__).parent)

    def local(frame, event, arg):
        nonlocal count
        count += event == "line"
        return local

    sys.settrace(lambda frame, event, arg: local if frame.f_code.co_filename.startswith(package) else None)
    try:
        fn(*args)
    finally:
        sys.settrace(None)
    return count


def test_long_texts_stay_cheap():
    rng = random.Random(1)
    a = "".join(rng.choice("abcdefghij ") for _ in range(20_000))
    b = "".join(rng.choice("abcdefghij ") for _ in range(20_000))
    s = score(a, b)
    assert 0 < s.values["char_error_rate"] <= 1
    # Linear in the texts' length: a plain DP over the 10k caps is 10^8 steps.
    assert interpreter_steps(score, a, b) < 30 * (len(a) + len(b))


def test_word_f1_is_an_extra_metric():
    assert word_f1("red cat blue", "blue cat red") == 1.0
    assert word_f1("red red", "red cat") == pytest.approx(0.5)  # P = 1/2, R = 1/2
    assert word_f1("red cat dog", "red cat") == pytest.approx(0.8)  # P = 2/3, R = 1
    assert word_f1("", "") == 1.0 and word_f1("a", "") == 0.0 and word_f1("", "a") == 0.0
    assert not REGISTRY["word_f1"].column and REGISTRY["exact_match"].column


def test_a_metric_registered_once_reaches_the_row_and_the_means(monkeypatch):
    monkeypatch.setattr(metrics, "REGISTRY", dict(REGISTRY))  # a registration for this test only

    @metrics.metric("starts_right", percent=True)
    def starts_right(prediction: str, truth: str) -> float:
        return float(prediction[:1] == truth[:1])

    import predictions.scorer as scorer

    monkeypatch.setattr(scorer, "REGISTRY", metrics.REGISTRY)
    s = scorer.score("Pari", "paris")
    row = make_row(job_id="j", user_id=None, epoch=0.5, step=1,
                   sample=Sample(0, "q", "paris", "id", 0, "dataset", "d.jsonl"),
                   generation=Generation("Pari", 1, 1, 1.0, "eos", 4, False, None, None), scores=s)
    assert row["metrics"] == {"word_f1": 0.0, "starts_right": 1.0}  # the jsonb column: no migration
    assert row["exact_match"] == 0.0 and "starts_right" not in row
    assert scorer.mean_scores([s, scorer.score("x", "paris")])["starts_right"] == 0.5
    with pytest.raises(ValueError, match="registered twice"):
        metrics.metric("starts_right")(starts_right)


def test_no_validator_means_none():
    s = score("x", "x")
    assert (s.validation_pass, s.validation_errors, s.validation_kind) == (None, None, None)


def test_json_parse_validator_reports_as_the_platform_does():
    ok = score(' {"a": 1}\n', '{"a": 1}', json_parse=True)
    assert (ok.validation_pass, ok.validation_errors, ok.validation_kind) == (True, None, "json_parse")
    bad = score('{"a": 1', '{"a": 1}', json_parse=True)
    assert bad.validation_pass is False
    (error,) = bad.validation_errors
    assert error["validator"] == "json_parse" and error["message"] == "Prediction is not valid JSON"
    assert "line 1 column" in error["detail"]
    assert score('```json\n{"a": 1}\n```', "", json_parse=True).validation_pass is False
    nan = score('{"a": NaN}', "", json_parse=True)  # Python would accept it; JSON does not
    assert nan.validation_pass is False and "NaN" in nan.validation_errors[0]["detail"]
    deep = score("[" * 100_000, "", json_parse=True)
    assert deep.validation_pass is False and len(deep.validation_errors) == 1


def test_json_schema_validator_lists_errors():
    schema = {"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer"}}}
    good = score('{"name": "a", "age": 3}', "", json_schema=schema)
    assert (good.validation_pass, good.validation_errors, good.validation_kind) == (True, None, "json_parse+json_schema")
    bad = score('{"age": "three"}', "", json_schema=schema)
    assert bad.validation_pass is False and bad.validation_kind == "json_parse+json_schema"
    assert {e["validator"] for e in bad.validation_errors} == {"json_schema"}
    assert sorted(e["detail"] for e in bad.validation_errors) == [
        "(root): 'name' is a required property", "age: 'three' is not of type 'integer'"]
    unparsable = score("name: a", "", json_schema=schema)  # a schema implies parsing
    assert unparsable.validation_pass is False and unparsable.validation_errors[0]["validator"] == "json_parse"


def test_validation_errors_are_few_and_short():
    schema = {"type": "array", "items": {"type": "integer"}}
    many = score(json.dumps([str(i) for i in range(20)]), "", json_schema=schema)
    assert len(many.validation_errors) == MAX_ERRORS and many.validation_errors[-1]["detail"] == "… and 16 more"
    assert many.validation_errors[0]["detail"] == "0: '0' is not of type 'integer'"
    long = score(json.dumps({"x" * 1000: 1}), "", json_schema={"type": "array"})
    assert long.validation_pass is False and len(long.validation_errors[0]["detail"]) == MAX_ERROR_CHARS


def test_odd_input_scores_to_json():
    for prediction, truth in (("\x00 naïve 🤖", "naïve 🤖"), ("", "\u200b"), ("日本語", "日本"), ("\ud800", "a")):
        s = score(prediction, truth)
        assert all(math.isfinite(v) for v in s.values.values())
        json.dumps(s.values, allow_nan=False)
    assert score("日本語", "日本").values["char_error_rate"] == pytest.approx(1 / 2)


def test_score_many_and_mean_scores():
    scores = score_many(["a", "b"], ["a", "a"], json_parse=True)
    assert [s.values["exact_match"] for s in scores] == [1.0, 0.0]
    with pytest.raises(ValueError):
        score_many(["a"], ["a", "b"])
    means = mean_scores([score("a", "a"), score("b", "a", json_parse=True), score("1", "1", json_parse=True)])
    assert means["exact_match"] == pytest.approx(2 / 3) and means["validation_pass"] == 0.5
    assert means["char_error_rate"] == pytest.approx(1 / 3) and means["word_overlap"] == pytest.approx(2 / 3)
    assert set(means) == {*REGISTRY, "validation_pass"}
    assert "validation_pass" not in mean_scores([score("a", "a")])
    assert mean_scores([]) == {}
    assert mean_scores([score("a", "")]) == {}  # no ground truth: nothing to average
