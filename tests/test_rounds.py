"""A round in one process on a tiny real model: the split of the sample across ranks, one bad
sample that never sinks its round, the prompts dropped before the draw, and the rounds log."""

from __future__ import annotations

import json

import pytest
import torch

import predictions.generator as generator_module
from predictions.rounds import (
    ROUNDS_LOG_NAME,
    PredictionRounds,
    fault_hook_from_env,
    same_answer,
    split_samples,
    with_prompts,
)
from predictions.sampler import draw_samples
from predictions.store.rows import ROW_COLUMNS
from predictions.store.writers.local import LocalJsonlWriter
from trainer.config.schema import PredictionsConfig
from trainer.demo import build_model, build_word_tokenizer, make_task_rows

ROWS = make_task_rows(40, seed=3)


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer([r["prompt"] + " " + r["completion"] for r in ROWS])


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(tokenizer, hidden_size=32, layers=1, heads=2)


def test_the_split_is_balanced_by_count_and_length_and_covers_every_sample_once():
    lengths = [9, 1, 5, 5, 3, 8, 2, 7, 4, 6, 1]
    shares = split_samples(lengths, 3)
    assert sorted(i for share in shares for i in share) == list(range(len(lengths)))
    assert sorted(map(len, shares)) == [3, 4, 4]  # counts first: a round's cost is mostly decoding steps
    totals = [sum(lengths[i] for i in share) for share in shares]
    assert max(totals) - min(totals) <= 3, totals  # the snake deal evens the lengths out
    assert split_samples(lengths, 3) == shares  # deterministic: every rank computes the same
    assert split_samples(lengths, 1) == [list(range(len(lengths)))]
    assert split_samples([4], 2) == [[0], []]  # more ranks than samples: an empty share is fine


def make_rounds(tokenizer, tmp_path, *, count=5, batch_size=8):
    samples = draw_samples([(i, r["prompt"], r["completion"]) for i, r in enumerate(ROWS)], count,
                           seed=0, source="train", source_id="rows")
    settings = PredictionsConfig(enabled=True, sample_count=count, max_new_tokens=4, batch_size=batch_size)
    return PredictionRounds(samples, tokenizer, settings, job_id="j", user_id=None,
                            local=LocalJsonlWriter(tmp_path / "predictions.jsonl"),
                            rounds_log=tmp_path / ROUNDS_LOG_NAME)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_sample_that_cannot_be_generated_is_a_failed_row_and_the_round_is_kept(tokenizer, model, tmp_path,
                                                                                   monkeypatch, caplog):
    rounds = make_rounds(tokenizer, tmp_path)
    expected = {r["sample_index"]: r["prediction"] for r in rounds._rows(
        [g for _, g in rounds._generate_share(model)], 0, 0.0)[0]}
    bad = rounds.samples[2].prompt
    real = generator_module._generate_batch

    def poisoned(model_, tokenizer_, prompts, *args, **kwargs):
        if bad in prompts:  # its batch fails, then it fails alone; its batch-mates succeed alone
            raise RuntimeError("device-side assert triggered (test)")
        return real(model_, tokenizer_, prompts, *args, **kwargs)

    monkeypatch.setattr(generator_module, "_generate_batch", poisoned)
    result = rounds.run(model, step=7, epoch=1.5)
    assert result.ok and result.samples == 5 and result.failed_samples == 1
    rows = read(tmp_path / "predictions.jsonl")
    assert [r["sample_index"] for r in rows] == [0, 1, 2, 3, 4] and all(tuple(r) == ROW_COLUMNS for r in rows)
    failed = rows[2]
    assert failed["prediction"] == "" and failed["completion_tokens"] == 0 and failed["stop_reason"] is None
    assert failed["generation_error"] == "RuntimeError: device-side assert triggered (test)"
    assert failed["exact_match"] is None and failed["prompt_tokens"] > 0  # no answer: no scores (NULL)
    # The others are the answers a round without the bad sample gives, and carry no error.
    assert {r["sample_index"]: r["prediction"] for r in rows if r["sample_index"] != 2} == \
        {i: p for i, p in expected.items() if i != 2}
    assert all(r["generation_error"] is None for r in rows if r["sample_index"] != 2)
    assert any("sample 2 failed to generate at step 7: RuntimeError" in line for line in caplog.messages)
    assert any("5 samples (1 failed to generate)" in line for line in caplog.messages)

    (record,) = read(tmp_path / ROUNDS_LOG_NAME)
    assert {k: record[k] for k in ("job_id", "step", "epoch", "epoch_progress", "status", "samples",
                                   "failed_samples", "error")} == {
        "job_id": "j", "step": 7, "epoch": 1, "epoch_progress": 1.5, "status": "ok", "samples": 5,
        "failed_samples": 1, "error": None}
    assert record["generated_tokens"] == sum(r["completion_tokens"] for r in rows) > 0
    assert record["tokens_per_s"] == pytest.approx(record["generated_tokens"] / record["seconds"], rel=0.01)
    assert record["time"].endswith("+00:00")


def test_a_failed_round_is_in_the_rounds_log_too(tokenizer, model, tmp_path, monkeypatch):
    rounds = make_rounds(tokenizer, tmp_path)
    rounds.test_fault = (0, 3)  # the test hook, as PREDICTIONS_TEST_FAIL_RANK="0:3" sets it
    assert not rounds.run(model, step=3, epoch=0.25).ok
    assert rounds.run(model, step=4, epoch=0.5).ok
    failed, ok = read(tmp_path / ROUNDS_LOG_NAME)
    assert (failed["status"], failed["samples"], failed["generated_tokens"]) == ("failed", 5, 0)
    assert "PREDICTIONS_TEST_FAIL_RANK (a test hook) fails rank 0 at step 3" in failed["error"]
    assert ok["status"] == "ok" and ok["error"] is None
    assert {r["step"] for r in read(tmp_path / "predictions.jsonl")} == {4}  # nothing of the failed round


def test_when_every_sample_fails_the_round_fails_rather_than_writing_only_failed_rows(tokenizer, model, tmp_path,
                                                                                      monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(generator_module, "_generate_batch", out_of_memory)
    rounds = make_rounds(tokenizer, tmp_path, batch_size=2)
    result = rounds.run(model, step=2, epoch=0.1)
    assert not result.ok and "every sample failed to generate, e.g. OutOfMemoryError" in result.error
    assert not (tmp_path / "predictions.jsonl").exists()
    assert read(tmp_path / ROUNDS_LOG_NAME)[0]["status"] == "failed"


def test_prompts_that_tokenise_to_nothing_are_dropped_before_the_draw_with_a_line(tokenizer, caplog):
    def lines():
        return [r.getMessage() for r in caplog.records if r.name.startswith("predictions")]

    triples = [(0, "reverse: red", "red"), (1, "   ", "x"), (2, "reverse: cat dog", "dog cat"), (3, "", "y")]
    assert with_prompts(triples, tokenizer, what="samples rows") == [triples[0], triples[2]]
    assert lines() == ["predictions: dropped 2 samples rows whose prompt is empty (source_index 1, 3); "
                       "a round cannot generate from nothing"]
    assert with_prompts(triples[:1], tokenizer) == triples[:1] and len(lines()) == 1
    # Every rank draws; the others are quiet: one line, not one per rank.
    assert with_prompts(triples, tokenizer, quiet=True) == [triples[0], triples[2]] and len(lines()) == 1


def test_the_fault_hook_is_read_from_its_variable_only():
    assert fault_hook_from_env({}) is None
    assert fault_hook_from_env({"PREDICTIONS_TEST_FAIL_RANK": "1:5"}) == (1, 5)


def test_a_lone_failure_keeps_the_caller_rng_and_padding_of_the_batch(tokenizer, model):
    # A prompt that tokenises to nothing, with isolate_failures, is a SampleFailure in its place.
    gens = generator_module.generate_predictions(model, tokenizer, ["reverse: red", "  ", "reverse: cat dog"],
                                                 max_new_tokens=3, isolate_failures=True)
    assert isinstance(gens[1], generator_module.SampleFailure) and "tokenises to nothing" in gens[1].error
    assert [g.prompt_tokens for g in (gens[0], gens[2])] == [2, 3]
    assert tokenizer.padding_side == "right" and torch.is_grad_enabled()


def test_a_round_where_every_sample_got_the_same_answer_is_recognised():
    def gen(text):
        return generator_module.Generation(text, 1, 1, 1.0, "eos", 8, False, None, None)

    failure = generator_module.SampleFailure("RuntimeError: x")
    assert same_answer([gen("a b"), gen("a b"), failure]) == "a b"
    assert same_answer([gen("a b"), gen("b a")]) is None
    assert same_answer([gen("a b"), failure]) is None  # one answer is no pattern
