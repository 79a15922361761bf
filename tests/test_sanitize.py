"""predictions/store/sanitize.py: every row becomes storable in Postgres text and a UTF-8 JSON body."""

from __future__ import annotations

import json
import math

from predictions.store.rows import Generation, Sample, Scores, make_row
from predictions.store.sanitize import sanitize_row, split_by_bytes


def row(prediction: str = "answer", **overrides) -> dict:
    r = make_row(
        job_id="job",
        user_id="user",
        epoch=1.0,
        step=10,
        sample=Sample(0, "prompt", "truth", "pid", 3, "dataset", "eval.jsonl"),
        generation=Generation(prediction, 5, 7, 12.5, "eos", 64, False, None, None),
        scores=Scores({"exact_match": 0.0, "char_error_rate": 0.5, "length_ratio": 1.0, "word_overlap": 0.25}, False,
                      [{"validator": "json_parse", "message": "bad json", "detail": None}], "json_parse"),
    )
    r.update(overrides)
    return r


def storable(r: dict) -> None:
    """What the request body needs: strict JSON, encodable as UTF-8, no NUL for Postgres."""
    body = json.dumps(r, ensure_ascii=False, allow_nan=False)
    body.encode("utf-8")
    assert "\x00" not in body and "\\u0000" not in body


def test_nul_bytes_removed_everywhere():
    r = sanitize_row(row("a\x00b", prompt="\x00p", validation_errors=["e\x00rr"]), max_text_chars=100)
    assert (r["prediction"], r["prompt"], r["validation_errors"]) == ("ab", "p", ["err"])
    storable(r)


def test_lone_surrogates_replaced_pairs_joined():
    r = sanitize_row(row("x\ud800y", ground_truth="\udfff", validation_errors=["\ud83d\ude00 ok"]), max_text_chars=100)
    assert r["prediction"] == "x\ufffdy"
    assert r["ground_truth"] == "\ufffd"
    assert r["validation_errors"] == ["\U0001f600 ok"]  # a well-formed pair is its character
    storable(r)


def test_a_megabyte_completion_is_capped_and_flagged():
    r = sanitize_row(row("é" * 1_000_000), max_text_chars=100_000)
    assert len(r["prediction"]) == 100_000 and r["text_truncated"] is True
    assert r["prompt"] == "prompt"
    storable(r)


def test_short_text_is_not_flagged():
    assert sanitize_row(row("short"), max_text_chars=10)["text_truncated"] is False


def test_nan_and_inf_scores_become_null():
    r = sanitize_row(
        row(char_error_rate=math.nan, length_ratio=math.inf, word_overlap=-math.inf, latency_ms=3.0),
        max_text_chars=100,
    )
    assert (r["char_error_rate"], r["length_ratio"], r["word_overlap"]) == (None, None, None)
    assert r["latency_ms"] == 3.0
    storable(r)


def test_returns_a_new_dict_and_tolerates_odd_values():
    original = row("a\x00")
    odd = {**original, "prompt": None, "validation_errors": None, "step": 7, "extra": b"raw"}
    r = sanitize_row(odd, max_text_chars=5)
    assert original["prediction"] == "a\x00" and r is not odd
    assert r["prompt"] is None and r["extra"] == b"raw"
    assert sanitize_row({}, max_text_chars=5) == {}


def test_split_by_bytes_keeps_order_and_limit():
    rows = [row(f"p{i}" * 50, sample_index=i) for i in range(40)]
    limit = 3_000
    chunks = split_by_bytes(rows, limit)
    assert len(chunks) > 1
    assert [r for c in chunks for r in c] == rows
    for c in chunks:
        body = json.dumps(c, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        assert len(body) <= limit


def test_split_by_bytes_oversized_row_goes_alone():
    rows = [row("a"), row("b" * 5_000), row("c")]
    chunks = split_by_bytes(rows, 2_000)
    assert [len(c) for c in chunks] == [1, 1, 1]
    assert split_by_bytes([], 100) == []
