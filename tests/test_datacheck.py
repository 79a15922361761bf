"""The parent's data check: the same reader as training, a hub model's local tokenizer, the
CPU demo's limits, and a training process's data error handed back to the parent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import trainer.datacheck as datacheck
from tests.e2e import ROOT, job_env
from trainer.config.load import load_config
from trainer.data import DataError
from trainer.datacheck import RunRefused, check_data, check_machine, recorded_failure

ROWS = [{"prompt": f"say {w}", "completion": w} for w in "red cat blue dog fox owl".split()]


@pytest.fixture
def job(job_environ):
    """load_config() with only the given variables set (and OUTPUT_DIR under tmp_path)."""
    def make(**values):
        job_environ(**values)
        return load_config()
    return make


def trainer_lines(caplog) -> list[str]:
    """The image's own lines (caplog also holds other libraries' INFO records)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith("trainer")]


def write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_data_too_large_for_the_cpu_demo_is_refused_before_training(job, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(datacheck, "DEMO_MAX_ROWS", 5)
    cfg = job(DATASET_PATH=write(tmp_path / "t.jsonl", ROWS), TRAINING_CONFIG={"eval_strategy": "no"})
    with pytest.raises(DataError, match="MODEL_NAME: the demo model trains from scratch on a CPU and takes at most 5 rows"):
        check_data(cfg)
    assert datacheck.DEMO_ON_YOUR_DATA in caplog.messages


def test_a_local_hub_style_model_gets_the_context_and_unknown_token_checks(job, tmp_path, caplog):
    from trainer.demo import build_word_tokenizer

    tokenizer = build_word_tokenizer(["say red cat blue dog"])  # one that cannot spell every word
    tokenizer.model_max_length = 6
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text('{"model_type": "llama"}\n')  # a model folder, as MODEL_NAME needs
    rows = [*ROWS, {"prompt": "say " + "red " * 10, "completion": "x"}]
    cfg = job(MODEL_NAME=str(tmp_path / "model"), DATASET_PATH=write(tmp_path / "t.jsonl", rows))
    caplog.clear()
    check_data(cfg)
    lines = trainer_lines(caplog)
    assert "prompt longer than the model's context (6 tokens): 1 (line 7)" in lines[1]
    # fox and owl (prompt and completion each) are unknown to a tokenizer that never saw them; the
    # skipped row is not counted
    assert "WARNING 4 of 18 tokens (22.2%) are unknown to the tokenizer" in lines[2]


def test_output_dir_and_process_count(job, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    cfg = job()
    monkeypatch.setattr(datacheck.os, "cpu_count", lambda: 2)
    check_machine(cfg, 2, "cpu")
    with pytest.raises(RunRefused, match="NUM_PROCESSES: 3 training processes, but this machine has 2 CPU cores"):
        check_machine(cfg, 3, "cpu")
    cfg = job(OUTPUT_DIR=str(tmp_path / "file" / "out"))
    with pytest.raises(RunRefused, match="OUTPUT_DIR: .* is not writable"):
        check_machine(cfg, 1, "cpu")


def test_a_training_process_that_fails_on_data_leaves_the_message_for_the_parent(tmp_path):
    """The parent normally refuses first; this is the training process's own guard, run directly."""
    out = tmp_path / "out"
    env = job_env(out, DATASET_PATH=write(tmp_path / "bad.jsonl", [{"text": "x"}]),
                  TRAINING_CONFIG={"eval_strategy": "no"})
    out.mkdir()
    proc = subprocess.run([sys.executable, "-m", "trainer.train"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 78, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"data error: DATASET_PATH {tmp_path}/bad.jsonl: no usable row" in proc.stdout
    assert recorded_failure(out, clear=True).startswith(f"DATASET_PATH {tmp_path}/bad.jsonl: no usable row")
    assert recorded_failure(out) is None  # cleared


def test_the_parent_reports_a_training_process_data_error_with_78(job, tmp_path, monkeypatch, capsys):
    """accelerate's launcher exits 1 whatever its child's code: the message left on the volume
    is what tells the parent it was the data."""
    import entrypoint
    import trainer.pod.launch

    def failing_children(cmd, extra_env):
        datacheck.record_failure(tmp_path / "out", "DATASET_PATH x.jsonl: no usable row")
        return 1

    job(DATASET_PATH=write(tmp_path / "t.jsonl", ROWS), TRAINING_CONFIG={"eval_strategy": "no"})
    monkeypatch.setattr(trainer.pod.launch, "run_children", failing_children)
    assert entrypoint.main([]) == 78
    assert "data error: DATASET_PATH x.jsonl: no usable row" in capsys.readouterr().out
    assert recorded_failure(tmp_path / "out") is None  # consumed


def test_a_hub_model_not_on_this_machine_is_checked_without_a_download(job, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a download attempt would fail loudly, not hang
    cfg = job(MODEL_NAME="example-org/not-on-this-machine", DATASET_PATH=write(tmp_path / "t.jsonl", ROWS))
    caplog.clear()
    check_data(cfg)
    lines = trainer_lines(caplog)
    assert lines[0] == ("data: the tokenizer of example-org/not-on-this-machine is not on this machine yet: prompt "
                        "lengths and unknown tokens are checked by the training process once it has downloaded it")
    assert lines[1].endswith("t.jsonl: 6 usable rows (6 prompt/completion)")


def test_answers_the_demo_model_cannot_write_are_warned_about(job, tmp_path, monkeypatch, caplog):
    """Evaluation answers never seen whole (codes): the demo's byte-level tokenizer writes them from
    pieces the training answers share, so nothing is said; a tokenizer that makes each answer one
    token (the demo's former word-level one) gets a warning naming the file, as does <unk>."""
    from trainer.demo import build_word_tokenizer

    train = [{"prompt": f"code {n}", "completion": f"A-{n:04d}"} for n in range(0, 400, 2)]
    evals = [{"prompt": f"code {n}", "completion": f"A-{n:04d}"} for n in range(1, 41, 2)]
    cfg = job(DATASET_PATH=write(tmp_path / "t.jsonl", train), EVAL_DATASET_PATH=write(tmp_path / "e.jsonl", evals))
    caplog.clear()
    check_data(cfg)
    assert not [m for m in trainer_lines(caplog) if "WARNING" in m]

    texts = [r["prompt"] + " " + r["completion"] for r in train + evals]
    monkeypatch.setattr(datacheck, "demo_tokenizer", lambda _paths: build_word_tokenizer(texts))
    caplog.clear()
    check_data(cfg)
    assert (f"data: EVAL_DATASET_PATH {tmp_path / 'e.jsonl'}: WARNING 20 of 20 answers hold tokens no training "
            "answer has (e.g. 'A-0001'): the model never learned to write them") in "\n".join(trainer_lines(caplog))

    monkeypatch.setattr(datacheck, "demo_tokenizer", lambda _paths: build_word_tokenizer(texts[:200]))
    caplog.clear()
    check_data(cfg)
    assert "WARNING 20 of 20 answers hold tokens unknown to the tokenizer (<unk>; e.g. 'A-0001')" in \
        "\n".join(trainer_lines(caplog))
