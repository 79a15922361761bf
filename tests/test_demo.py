"""The main job on its embedded default, end to end: `python entrypoint.py` with nothing set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from trainer.config import VARIABLES

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
    assert "24 samples from the evaluation data, at each epoch end, plus a baseline round before training; 9 rounds expected" in out
    assert out.index("migrations: skipped") < out.index("data: train.jsonl")
    assert "predictions: projected cost: 9 rounds × " in out

    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    by_step: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_step[row["step"]].append(row)
    steps = sorted(by_step)
    assert len(steps) == 9 and steps[0] == 0  # baseline + 8 epochs, keyed by global step
    assert all(len(by_step[s]) == 24 for s in steps)
    assert all(sorted(r["sample_index"] for r in by_step[s]) == list(range(24)) for s in steps)
    # the same samples in every round
    assert len({tuple(r["prompt_id"] for r in sorted(by_step[s], key=lambda r: r["sample_index"])) for s in steps}) == 1

    exact = [sum(r["exact_match"] for r in by_step[s]) / 24 for s in steps]
    assert exact[0] <= 0.1, exact  # fresh weights: nothing right
    assert exact[-1] >= 0.6, exact  # most samples right at the end
    assert max(exact[:3]) < exact[-1]
    assert "prediction rounds" in out and "9 rounds (0 failed), 216 rows" in out
    assert (tmp_path / "out" / "final" / "model.safetensors").exists()
