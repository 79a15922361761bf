"""The callback in real Trainer runs on a tiny model: each frequency fires where it should, and a
failing round never stops training."""

from __future__ import annotations

import json

import pytest
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from predictions.callback import PredictionsCallback
from predictions.rounds import PredictionRounds
from predictions.sampler import draw_samples
from predictions.store.writers.local import LocalJsonlWriter
from trainer.config.schema import PredictionsConfig
from trainer.data import Example, tokenize
from trainer.demo import build_model, build_tokenizer, make_task_rows

ROWS = make_task_rows(40, seed=3)  # 40 rows, batch 8 → 5 steps per epoch


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([r["prompt"] + " " + r["completion"] for r in ROWS])


def examples():
    return [Example(i, r["prompt"], r["completion"]) for i, r in enumerate(ROWS)]


def run_trainer(tokenizer, tmp_path, callback, *, epochs=2, eval_strategy="no", eval_steps=None):
    data = [tokenize(e, tokenizer, 32) for e in examples()]
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), num_train_epochs=epochs, per_device_train_batch_size=8,
        learning_rate=1e-3, eval_strategy=eval_strategy, eval_steps=eval_steps, save_strategy="no",
        report_to="none", use_cpu=True, disable_tqdm=True, remove_unused_columns=False, logging_steps=100,
    )
    trainer = Trainer(
        model=build_model(tokenizer, hidden_size=32, layers=1, heads=2), args=args, train_dataset=data,
        eval_dataset=data[:8] if eval_strategy != "no" else None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True), processing_class=tokenizer,
        callbacks=[callback],
    )
    trainer.train()
    return trainer


class Recorder:
    def __init__(self):
        self.calls: list[tuple[int, float, bool]] = []

    def __call__(self, model, *, step, epoch):
        self.calls.append((step, epoch, model.training))


@pytest.mark.parametrize(
    "frequency, kwargs, trainer_kwargs, expected_steps",
    [
        ("epoch", {}, {}, [5, 10]),
        ("steps", {"step_interval": 3}, {}, [3, 6, 9]),
        ("eval", {}, {"eval_strategy": "steps", "eval_steps": 4}, [4, 8, 10]),  # the Trainer evaluates at the last step too
        ("epoch", {"baseline": True}, {}, [0, 5, 10]),
    ],
)
def test_each_frequency_fires_in_a_real_trainer_run(tokenizer, tmp_path, frequency, kwargs, trainer_kwargs, expected_steps):
    record = Recorder()
    run_trainer(tokenizer, tmp_path, PredictionsCallback(record, frequency=frequency, **kwargs), **trainer_kwargs)
    assert [step for step, _, _ in record.calls] == expected_steps


def test_a_step_is_predicted_once_even_when_two_events_meet(tokenizer, tmp_path):
    # eval at each epoch end and predictions at epoch end + eval would collide at the same step
    record = Recorder()
    cb = PredictionsCallback(record, frequency="eval")
    run_trainer(tokenizer, tmp_path, cb, eval_strategy="epoch")
    cb.on_evaluate(None, type("S", (), {"global_step": 10, "epoch": 2.0})(), None, model=None)  # a repeat
    assert [s for s, _, _ in record.calls] == [5, 10]


def test_steps_already_done_by_an_earlier_attempt_are_skipped(tokenizer, tmp_path):
    record = Recorder()
    run_trainer(tokenizer, tmp_path, PredictionsCallback(record, frequency="steps", step_interval=2, done_steps={2, 4}))
    assert [s for s, _, _ in record.calls] == [6, 8, 10]


def test_bad_frequency_is_refused_when_built():
    with pytest.raises(ValueError, match="step_interval"):
        PredictionsCallback(Recorder(), frequency="steps")
    with pytest.raises(ValueError, match='"eval", "epoch" or "steps"'):
        PredictionsCallback(Recorder(), frequency="hourly")


class FlakyWriter:
    """Raises on the calls listed in `fail_on` (1-based), stores the rest."""

    name = "flaky"

    def __init__(self, fail_on):
        self.fail_on, self.calls, self.rows = set(fail_on), 0, []

    def write(self, rows):
        self.calls += 1
        if self.calls in self.fail_on:
            raise OSError("disk full (test)")
        self.rows += rows

    def close(self):
        return None


def make_rounds(tokenizer, writer):
    samples = draw_samples([(e.source_index, e.prompt, e.completion) for e in examples()], 4,
                           seed=0, source="train", source_id="rows")
    settings = PredictionsConfig(enabled=True, sample_count=4, max_new_tokens=4)
    return PredictionRounds(samples, tokenizer, settings, job_id="j", user_id=None, local=writer)


def test_a_failing_writer_does_not_stop_training_and_is_counted(tokenizer, tmp_path, caplog):
    writer = FlakyWriter(fail_on={1})
    rounds = make_rounds(tokenizer, writer)
    trainer = run_trainer(tokenizer, tmp_path, PredictionsCallback(rounds.run, frequency="epoch"))
    assert trainer.state.global_step == 10  # training completed
    assert [r.ok for r in rounds.results] == [False, True] and rounds.failed == 1
    assert any("round 1 at step 5 FAILED (OSError: disk full (test))" in line for line in caplog.messages)
    assert {r["step"] for r in writer.rows} == {10} and len(writer.rows) == 4


def test_a_failing_generation_does_not_stop_training_and_is_counted(tokenizer, tmp_path, monkeypatch):
    import predictions.rounds as rounds_module

    real, calls = rounds_module.generate_predictions, []

    def sometimes_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory (test)")
        return real(*args, **kwargs)

    monkeypatch.setattr(rounds_module, "generate_predictions", sometimes_fails)
    writer = LocalJsonlWriter(tmp_path / "predictions.jsonl")
    rounds = make_rounds(tokenizer, writer)
    trainer = run_trainer(tokenizer, tmp_path, PredictionsCallback(rounds.run, frequency="steps", step_interval=3))
    assert trainer.state.global_step == 10
    assert [r.ok for r in rounds.results] == [True, False, True]
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in rows}) == [3, 9] and len(rows) == 8
    assert all(r["prompt_id"] and r["completion_tokens"] >= 1 for r in rows)
