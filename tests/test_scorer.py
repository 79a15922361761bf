"""The scorer, on hand-computed examples."""

from __future__ import annotations

import json
import math
import random
import time

import pytest

from predictions.scorer import MAX_ERROR_CHARS, MAX_ERRORS, levenshtein, mean_scores, score, score_many, word_f1


def plain_levenshtein(a: str, b: str) -> int:
    """The textbook two-row DP: the reference the fast one must agree with."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def test_exact_match_ignores_surrounding_whitespace_only():
    assert score(" blue cat red\n", "blue cat red").exact_match
    assert not score("blue cat", "blue cat red").exact_match
    assert not score("blue  cat", "blue cat").exact_match  # inner whitespace counts
    assert not score("Blue cat", "blue cat").exact_match  # so does case


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


def test_long_texts_stay_cheap():
    rng = random.Random(1)
    a = "".join(rng.choice("abcdefghij ") for _ in range(20_000))
    b = "".join(rng.choice("abcdefghij ") for _ in range(20_000))
    start = time.perf_counter()
    s = score(a, b)
    assert time.perf_counter() - start < 3  # ~0.1 s; a plain DP over the 10k caps takes ~50 s
    assert 0 < s.char_error_rate <= 1


def test_char_error_rate_and_length_ratio():
    s = score("kitten", "sitting")
    assert s.char_error_rate == pytest.approx(3 / 7)
    assert s.length_ratio == pytest.approx(6 / 7)
    assert score("", "").char_error_rate == 0 and score("", "").length_ratio == 1.0
    assert score("abc", "").char_error_rate == 3.0  # divided by max(1, 0)
    assert score("abc", "").length_ratio == 3.0  # finite: it must stay valid JSON
    assert score("", "abcd").length_ratio == 0.0 and score("", "abcd").char_error_rate == 1.0
    assert score("  abc \n", "abc").char_error_rate == 0.0


def test_word_overlap_is_f1_of_word_bags():
    assert word_f1("red cat blue", "blue cat red") == 1.0
    assert word_f1("red red", "red cat") == pytest.approx(0.5)  # P = 1/2, R = 1/2
    assert word_f1("red cat dog", "red cat") == pytest.approx(0.8)  # P = 2/3, R = 1
    assert word_f1("RED Cat", "red cat") == 1.0
    assert word_f1("", "") == 1.0 and word_f1("a", "") == 0.0 and word_f1("", "a") == 0.0
    assert score("red cat", "cat red").word_overlap == 1.0


def test_no_validator_means_none():
    s = score("x", "x")
    assert (s.validation_pass, s.validation_errors, s.validation_kind) == (None, None, None)


def test_json_parse_validator():
    ok = score(' {"a": 1}\n', '{"a": 1}', json_parse=True)
    assert ok.validation_pass and ok.validation_errors == [] and ok.validation_kind == "json_parse"
    bad = score('{"a": 1', '{"a": 1}', json_parse=True)
    assert bad.validation_pass is False and bad.validation_errors[0].startswith("not valid JSON")
    assert "line 1 column" in bad.validation_errors[0]
    assert score("", "", json_parse=True).validation_pass is False
    assert score('```json\n{"a": 1}\n```', "", json_parse=True).validation_pass is False
    nan = score('{"a": NaN}', "", json_parse=True)  # Python would accept it; JSON does not
    assert nan.validation_pass is False and "NaN" in nan.validation_errors[0]
    deep = score("[" * 100_000, "", json_parse=True)
    assert deep.validation_pass is False and len(deep.validation_errors) == 1


def test_json_schema_validator_lists_errors():
    schema = {"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer"}}}
    good = score('{"name": "a", "age": 3}', "", json_schema=schema)
    assert (good.validation_pass, good.validation_errors, good.validation_kind) == (True, [], "json_schema")
    bad = score('{"age": "three"}', "", json_schema=schema)
    assert bad.validation_pass is False and bad.validation_kind == "json_schema"
    assert sorted(bad.validation_errors) == ["(root): 'name' is a required property", "age: 'three' is not of type 'integer'"]
    unparsable = score("name: a", "", json_schema=schema)  # a schema implies parsing
    assert unparsable.validation_pass is False and unparsable.validation_errors[0].startswith("not valid JSON")


def test_validation_errors_are_few_and_short():
    schema = {"type": "array", "items": {"type": "integer"}}
    many = score(json.dumps([str(i) for i in range(20)]), "", json_schema=schema)
    assert len(many.validation_errors) == MAX_ERRORS and many.validation_errors[-1] == "… and 16 more"
    assert many.validation_errors[0] == "0: '0' is not of type 'integer'"
    long = score(json.dumps({"x" * 1000: 1}), "", json_schema={"type": "array"})
    assert long.validation_pass is False and len(long.validation_errors[0]) == MAX_ERROR_CHARS


def test_odd_input_scores_to_json():
    for prediction, truth in (("\x00 naïve 🤖", "naïve 🤖"), ("", "\u200b"), ("日本語", "日本"), ("\ud800", "a")):
        s = score(prediction, truth)
        json.dumps(s.__dict__, allow_nan=False)
        assert all(math.isfinite(v) for v in (s.char_error_rate, s.length_ratio, s.word_overlap))
    assert score("日本語", "日本").char_error_rate == pytest.approx(1 / 2)


def test_score_many_and_mean_scores():
    scores = score_many(["a", "b"], ["a", "a"], json_parse=True)
    assert [s.exact_match for s in scores] == [True, False] and all(s.validation_kind == "json_parse" for s in scores)
    with pytest.raises(ValueError):
        score_many(["a"], ["a", "b"])
    means = mean_scores([score("a", "a"), score("b", "a", json_parse=True), score("1", "1", json_parse=True)])
    assert means["exact_match"] == pytest.approx(2 / 3) and means["validation_pass"] == 0.5
    assert means["char_error_rate"] == pytest.approx(1 / 3) and means["word_overlap"] == pytest.approx(2 / 3)
    assert "validation_pass" not in mean_scores([score("a", "a")])
    assert mean_scores([]) == {}
