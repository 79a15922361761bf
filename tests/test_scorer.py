"""The scorer, on hand-computed examples."""

from __future__ import annotations

import json
import math

import pytest

from predictions.scorer import levenshtein, mean_scores, score, word_f1


def test_exact_match_ignores_surrounding_whitespace():
    assert score(" blue cat red\n", "blue cat red").exact_match
    assert not score("blue cat", "blue cat red").exact_match


def test_char_error_rate_and_length_ratio():
    s = score("kitten", "sitting")
    assert s.char_error_rate == pytest.approx(3 / 7)
    assert s.length_ratio == pytest.approx(6 / 7)
    assert score("", "").char_error_rate == 0 and score("", "").length_ratio == 1.0
    assert score("abc", "").length_ratio == 3.0  # finite: it must stay valid JSON


def test_word_overlap_is_f1_of_word_bags():
    assert word_f1("red cat blue", "blue cat red") == 1.0
    assert word_f1("red red", "red cat") == pytest.approx(0.5)
    assert word_f1("", "") == 1.0 and word_f1("a", "") == 0.0


def test_levenshtein():
    assert levenshtein("", "abc") == 3 and levenshtein("abc", "abc") == 0 and levenshtein("ab", "ba") == 2


def test_no_validator_means_none():
    s = score("x", "x")
    assert (s.validation_pass, s.validation_errors, s.validation_kind) == (None, None, None)


def test_json_parse_validator():
    ok = score('{"a": 1}', '{"a": 1}', json_parse=True)
    assert ok.validation_pass and ok.validation_errors == [] and ok.validation_kind == "json_parse"
    bad = score('{"a": 1', '{"a": 1}', json_parse=True)
    assert bad.validation_pass is False and "not valid JSON" in bad.validation_errors[0]


def test_json_schema_validator_lists_errors():
    schema = {"type": "object", "required": ["name", "age"], "properties": {"age": {"type": "integer"}}}
    good = score('{"name": "a", "age": 3}', "", json_schema=schema)
    assert good.validation_pass and good.validation_kind == "json_schema"
    bad = score('{"age": "three"}', "", json_schema=schema)
    assert bad.validation_pass is False
    assert any("'name' is a required property" in e for e in bad.validation_errors)
    assert any(e.startswith("age:") for e in bad.validation_errors)


def test_odd_input_scores_to_json():
    s = score("\x00 naïve 🤖", "naïve 🤖")
    json.dumps(s.__dict__)
    assert all(math.isfinite(v) for v in (s.char_error_rate, s.length_ratio, s.word_overlap))


def test_mean_scores():
    means = mean_scores([score("a", "a"), score("b", "a", json_parse=True)])
    assert means["exact_match"] == 0.5 and means["validation_pass"] == 0.0
    assert mean_scores([]) == {}
