"""The sampler: the same rows in every round, every process and every run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from predictions.sampler import draw_samples, prompt_id

EXAMPLES = [(i * 2, f"prompt {i}", f"answer {i}") for i in range(100)]
ROOT = Path(__file__).resolve().parents[1]


def test_same_seed_same_samples_different_seed_different():
    a = draw_samples(EXAMPLES, 10, seed=1, source="eval", source_id="eval.jsonl")
    assert a == draw_samples(EXAMPLES, 10, seed=1, source="eval", source_id="eval.jsonl")
    assert a != draw_samples(EXAMPLES, 10, seed=2, source="eval", source_id="eval.jsonl")
    assert [s.sample_index for s in a] == list(range(10))
    assert [s.source_index for s in a] == sorted(s.source_index for s in a)  # kept in file order
    assert all(s.source_index == 2 * int(s.prompt.split()[1]) and s.sample_source == "eval" for s in a)


def test_count_is_capped_by_the_data():
    assert len(draw_samples(EXAMPLES[:3], 10, seed=0, source="train", source_id="t")) == 3


def test_prompt_id_is_stable_and_distinct():
    assert prompt_id("reverse: red cat") == prompt_id("reverse: red cat")
    assert prompt_id("reverse: red cat") != prompt_id("reverse: cat red")
    assert len(prompt_id("x")) == 16


def test_same_draw_in_processes_with_different_hash_seeds():
    code = ("import json; from predictions.sampler import draw_samples; "
            "print(json.dumps([(s.source_index, s.prompt_id) for s in draw_samples("
            "[(i, f'p{i}', 'a') for i in range(50)], 7, seed=3, source='eval', source_id='e')]))")
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        outputs.add(out.stdout)
    assert len(outputs) == 1 and len(json.loads(outputs.pop())) == 7
