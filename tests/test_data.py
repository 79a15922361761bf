"""Data formats: rendering, skipping, and the loss on the completion only."""

from __future__ import annotations

import json

import pytest

from trainer.data import DataError, Example, load_examples, read_rows, render, split_holdout, tokenize
from trainer.demo import build_tokenizer

WORDS = "system: user: assistant: reverse: red cat blue dog ### Instruction: Input: Response: sort"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer([WORDS])


def test_chat_prompt_is_every_turn_before_the_last_assistant_turn(tokenizer):
    row = {"messages": [
        {"role": "system", "content": "sort"},
        {"role": "user", "content": "red cat"},
        {"role": "assistant", "content": "cat red"},
        {"role": "user", "content": "blue dog"},
        {"role": "assistant", "content": "blue dog"},
    ]}
    prompt, completion = render(row, tokenizer)
    assert prompt == "system: sort\nuser: red cat\nassistant: cat red\nuser: blue dog\nassistant: "
    assert completion == "blue dog"


def test_prompt_completion_and_instruction_formats(tokenizer):
    assert render({"prompt": "reverse: red cat", "completion": "cat red"}, tokenizer) == ("reverse: red cat", "cat red")
    prompt, completion = render({"instruction": "sort", "input": "red cat", "output": "cat red"}, tokenizer)
    assert prompt == "user: sort\n\nred cat\nassistant: " and completion == "cat red"  # the chat template
    tokenizer_without_template = build_tokenizer([WORDS])
    tokenizer_without_template.chat_template = None
    prompt, _ = render({"instruction": "sort", "output": "x"}, tokenizer_without_template)
    assert prompt == "### Instruction:\nsort\n\n### Response:\n"


def test_rows_that_fit_no_format_are_skipped_and_counted(tokenizer, tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [{"prompt": "red", "completion": "cat"}, {"text": "no format"}, {"messages": [{"role": "user", "content": "x"}]},
            {"prompt": "red", "completion": "  "}, [1, 2]]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    lines = []
    examples = load_examples(path, tokenizer, log=lines.append)
    assert [e.source_index for e in examples] == [0]
    assert lines == ["data: mixed.jsonl: 1 rows used, 4 skipped ({'fits no format': 3, 'empty completion': 1})"]


def test_a_dataset_with_no_usable_row_is_an_error(tokenizer, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl: no usable row. Accepted formats"):
        load_examples(path, tokenizer, log=lambda _m: None)
    path.write_text("{not json\n")
    with pytest.raises(DataError, match="bad.jsonl: not valid JSON at line 1 column 2"):
        read_rows(path)


def test_json_list_and_wrapped_files(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"prompt": "a", "completion": "b"}]))
    (tmp_path / "b.json").write_text(json.dumps({"data": [{"prompt": "a", "completion": "b"}] * 2}))
    assert len(read_rows(tmp_path / "a.json")) == 1 and len(read_rows(tmp_path / "b.json")) == 2


def test_loss_only_on_the_completion_and_the_eos(tokenizer):
    item = tokenize(Example(0, "reverse: red cat", "cat red"), tokenizer, max_length=32)
    n_prompt = len(tokenizer("reverse: red cat", add_special_tokens=False).input_ids)
    assert item["labels"][:n_prompt] == [-100] * n_prompt
    assert item["labels"][n_prompt:] == item["input_ids"][n_prompt:]
    assert item["input_ids"][-1] == tokenizer.eos_token_id


def test_too_long_rows_lose_prompt_tokens_from_the_left(tokenizer):
    item = tokenize(Example(0, "reverse: " + "red " * 20, "cat red"), tokenizer, max_length=8)
    assert len(item["input_ids"]) == 8 and item["labels"][-3:] == item["input_ids"][-3:]


def test_holdout_split_is_fixed_and_disjoint():
    examples = [Example(i, str(i), "x") for i in range(20)]
    train, held = split_holdout(examples, 0.25, seed=1)
    assert len(held) == 5 and len(train) == 15 and not {e.source_index for e in train} & {e.source_index for e in held}
    assert split_holdout(examples, 0.25, seed=1) == (train, held)
