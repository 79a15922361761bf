"""The sampler: the same rows in every round, every process and every run."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from predictions.sampler import draw_samples, prompt_id

EXAMPLES = [(i * 2, f"prompt {i}", f"answer {i}") for i in range(100)]
ROOT = Path(__file__).resolve().parents[1]


def test_same_seed_same_samples_different_seed_different():
    a = draw_samples(EXAMPLES, 10, seed=1, source="eval", source_id="eval.jsonl")
    assert a == draw_samples(EXAMPLES, 10, seed=1, source="eval", source_id="eval.jsonl")
    assert a != draw_samples(EXAMPLES, 10, seed=2, source="eval", source_id="eval.jsonl")
    assert [s.sample_index for s in a] == list(range(10))
    assert [s.source_index for s in a] == sorted(s.source_index for s in a)  # kept in file order
    for s in a:
        n = int(s.prompt.split()[1])
        assert (s.source_index, s.ground_truth, s.prompt_id) == (2 * n, f"answer {n}", prompt_id(s.prompt))
        assert (s.sample_source, s.sample_source_id) == ("dataset", "eval.jsonl")


def test_the_draw_neither_uses_nor_moves_the_global_random_state():
    random.seed(0)
    expected_next = random.random()
    random.seed(0)
    a = draw_samples(EXAMPLES, 5, seed=4, source="train", source_id="t")
    assert random.random() == expected_next
    random.seed(99)
    assert draw_samples(EXAMPLES, 5, seed=4, source="train", source_id="t") == a


def test_count_is_capped_by_the_data():
    assert len(draw_samples(EXAMPLES[:3], 10, seed=0, source="train", source_id="t")) == 3
    assert draw_samples([], 10, seed=0, source="train", source_id="t") == []
    everything = draw_samples(EXAMPLES, 1000, seed=0, source="samples", source_id="s")
    assert [s.source_index for s in everything] == [e[0] for e in EXAMPLES]
    assert {s.sample_source for s in everything} == {"prediction_set"}  # the platform's name for a samples file


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="sample_count must be at least 1"):
        draw_samples(EXAMPLES, 0, seed=0, source="eval", source_id="e")
    with pytest.raises(ValueError, match="one of eval, train, samples"):
        draw_samples(EXAMPLES, 3, seed=0, source="validation", source_id="e")


def test_prompt_id_is_stable_and_distinct():
    assert prompt_id("reverse: red cat") == prompt_id("reverse: red cat")
    assert prompt_id("reverse: red cat") != prompt_id("reverse: cat red")
    # The full sha256 hex of the UTF-8 text, as the platform's pods stored it.
    assert prompt_id("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert len(prompt_id("naïve 🤖 \ud800")) == 64  # a lone surrogate still hashes


def test_prompt_id_is_the_platforms_hash_of_the_source_row():
    messages = [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}]
    canonical = json.dumps(messages, ensure_ascii=False, sort_keys=True)
    assert prompt_id({"messages": messages}) == hashlib.sha256(canonical.encode()).hexdigest()
    assert prompt_id({"prompt": "2+2=", "completion": "4"}) == hashlib.sha256(b"2+2=").hexdigest()
    # instruction rows: not the platform's hash of `input` (empty here: every row would collide)
    a = prompt_id({"instruction": "add", "input": "", "output": "x"})
    assert a != prompt_id({"instruction": "sub", "input": "", "output": "x"}) and a != prompt_id("")
    # the same source row → the same id, whatever the model's chat template rendered
    rows = [{"messages": messages}, {"prompt": "2+2=", "completion": "4"}]
    drawn = draw_samples([(0, "<s>[INST] Capital", "Paris"), (1, "<|user|>2+2=", "4")], 2, seed=0,
                         source="train", source_id="t.jsonl", source_rows=rows)
    assert [s.prompt_id for s in drawn] == [prompt_id(r) for r in rows]


def test_same_draw_in_processes_with_different_hash_seeds():
    code = ("import json; from predictions.sampler import draw_samples; "
            "print(json.dumps([(s.source_index, s.prompt_id) for s in draw_samples("
            "[(i, f'p{i}', 'a') for i in range(50)], 7, seed=3, source='eval', source_id='e')]))")
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        outputs.add(out.stdout)
    assert len(outputs) == 1
    drawn = json.loads(outputs.pop())
    assert drawn == [[s.source_index, s.prompt_id] for s in
                     draw_samples([(i, f"p{i}", "a") for i in range(50)], 7, seed=3, source="eval", source_id="e")]
