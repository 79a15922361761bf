"""The main job on its embedded default, end to end: `python entrypoint.py` with nothing set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from trainer.config.environment import VARIABLES

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_learns_and_its_predictions_show_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env["OUTPUT_DIR"] = str(tmp_path / "out")
    proc = subprocess.run([sys.executable, "entrypoint.py"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]

    # the report, before anything heavy
    assert "predictions storage: kept locally only — SUPABASE_URL is not set" in out
    assert "24 samples from the evaluation data, at each epoch end, plus a baseline round before training; 5 rounds expected" in out
    assert out.index("migrations: skipped") < out.index("data: DATASET_PATH ") < out.index("launch:")  # data checked in the parent
    assert "predictions: projected cost: 5 rounds × " in out

    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    by_step: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_step[row["step"]].append(row)
    steps = sorted(by_step)
    assert len(steps) == 5 and steps[0] == 0  # baseline + 4 epochs, keyed by global step
    assert all(len(by_step[s]) == 24 for s in steps)
    assert all(sorted(r["sample_index"] for r in by_step[s]) == list(range(24)) for s in steps)
    # the same samples in every round
    assert len({tuple(r["prompt_id"] for r in sorted(by_step[s], key=lambda r: r["sample_index"])) for s in steps}) == 1

    exact = [sum(r["exact_match"] for r in by_step[s]) / 24 for s in steps]
    assert exact[0] <= 0.1, exact  # fresh weights: nothing right
    assert exact[-1] >= 0.6, exact  # most samples right at the end
    assert exact[0] < exact[1] <= exact[-1]  # it learns within the first epoch
    assert "prediction rounds" in out and "5 rounds (0 failed), 120 rows" in out
    assert (tmp_path / "out" / "final" / "model.safetensors").exists()


FRUIT = "kiwi plum lime pear fig date yam leek kale corn rice bean pea oat rye nut".split()


def upper_rows(count: int, seed: int) -> str:
    """A task the bundled data never shows: upper-case 2 to 4 words none of which it holds."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = [rng.choice(FRUIT) for _ in range(rng.randint(2, 4))]
        rows.append(json.dumps({"prompt": "upper: " + " ".join(words), "completion": " ".join(w.upper() for w in words)}))
    return "\n".join(rows) + "\n"


@pytest.mark.slow
def test_the_demo_model_learns_a_task_of_your_own_data(tmp_path):
    """The demo's tokenizer is trained on the user's data (not all <unk>), and a small model
    learns the task on a CPU: exact match on held-out rows climbs from 0 to at least half."""
    from tests.e2e import job_env, run_entrypoint, spool_rows

    (tmp_path / "train.jsonl").write_text(upper_rows(1000, seed=1))
    (tmp_path / "eval.jsonl").write_text(upper_rows(40, seed=2))
    env = job_env(
        tmp_path / "out", DATASET_PATH=str(tmp_path / "train.jsonl"), EVAL_DATASET_PATH=str(tmp_path / "eval.jsonl"),
        TRAINING_CONFIG={"num_train_epochs": 2, "learning_rate": 2e-3, "per_device_train_batch_size": 32,
                         "warmup_steps": 0.05, "logging_steps": 20, "save_strategy": "no", "seed": 0,
                         "max_seq_length": 32, "eval_strategy": "no"},
        PREDICTIONS_CONFIG={"enabled": True, "sample_count": 16, "sample_frequency": "epoch", "baseline": True,
                            "max_new_tokens": 8, "batch_size": 16},
    )
    proc = run_entrypoint(env, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "demo model: a small model trained from scratch on your data, for trying the image on a CPU; " \
           "set MODEL_NAME for real fine-tuning" in out
    assert "unknown to the tokenizer" not in out
    rows = spool_rows(tmp_path / "out")
    exact: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        exact[row["step"]].append(row["exact_match"])
    means = [sum(v) / len(v) for _step, v in sorted(exact.items())]
    assert len(means) == 3 and means[0] <= 0.1 and means[-1] >= 0.5, means
