"""Data formats: rendering, skipping, and the loss on the completion only."""

from __future__ import annotations

import gzip
import json

import pytest

from trainer.data import (
    BOM,
    DataError,
    Example,
    load_examples,
    read_rows,
    render,
    split_holdout,
    tokenize,
    usable_examples,
)
from trainer.demo import build_word_tokenizer

WORDS = "system: user: assistant: reverse: red cat blue dog ### Instruction: Input: Response: sort"


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer([WORDS])


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
    tokenizer_without_template = build_word_tokenizer([WORDS])
    tokenizer_without_template.chat_template = None
    prompt, _ = render({"instruction": "sort", "output": "x"}, tokenizer_without_template)
    assert prompt == "### Instruction:\nsort\n\n### Response:\n"


def test_rows_that_fit_no_format_are_skipped_and_counted_with_their_lines(tokenizer, tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    rows = [{"prompt": "red", "completion": "cat"}, {"txt": "no format"}, {"messages": [{"role": "user", "content": "x"}]},
            {"prompt": "red", "completion": "  "}, [1, 2], {"prompt": 3, "completion": "x"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    caplog.clear()
    examples = load_examples(path, tokenizer, label="DATASET_PATH mixed.jsonl")
    assert [e.source_index for e in examples] == [0]
    assert [r.getMessage() for r in caplog.records if r.name.startswith("trainer")] == [
        "data: DATASET_PATH mixed.jsonl: 1 usable row (1 prompt/completion)",
        "data: DATASET_PATH mixed.jsonl: 5 rows skipped — fits no format: 1 (line 2); chat without a prompt and an "
        "assistant turn: 1 (line 3); empty completion: 1 (line 4); not a JSON object: 1 (line 5); wrong types: 1 (line 6)",
    ]


def test_a_dataset_with_no_usable_row_is_an_error(tokenizer, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl: no usable row; accepted rows"):
        load_examples(path, tokenizer)
    (tmp_path / "bad.json").write_text('[{"prompt": "a",\n "completion": }]')
    with pytest.raises(DataError, match="bad.json: not valid JSON at line 2 column 16"):
        read_rows(tmp_path / "bad.json")


def test_bad_lines_are_skipped_by_reason(tmp_path):
    good = json.dumps({"prompt": "a", "completion": "b"}).encode()
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\n".join([good, b"{not json", good.replace(b"a", b"\xff"), good.replace(b"a", b"a\x00"),
                                  b"", good]) + b"\n")
    file = read_rows(path)
    assert [line for line, _pos, _row in file.rows] == [1, 6]
    assert [pos for _line, pos, _row in file.rows] == [0, 4]  # blank lines do not count
    assert file.skipped == {"invalid JSON": [2], "invalid UTF-8": [3], "NUL byte": [4]}


def test_gzip_bom_and_wrappers_are_read(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}] * 3
    jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
    cases = {
        "a.jsonl.gz": gzip.compress(jsonl),
        "no-suffix": gzip.compress(jsonl),  # gzip by its magic bytes, whatever the name
        "bom.jsonl": BOM + jsonl,
        "bom.json": BOM + json.dumps(rows).encode(),
        "wrapped.json": json.dumps({"data": rows}).encode(),
        "wrapped.json.gz": gzip.compress(BOM + json.dumps({"data": rows}, indent=1).encode()),
        "one.json": json.dumps(rows[0]).encode(),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        file = read_rows(tmp_path / name)
        assert [r for _l, _p, r in file.rows] == (rows if name != "one.json" else rows[:1]), name
        assert not file.skipped, name


def test_files_that_cannot_be_read_at_all(tmp_path):
    (tmp_path / "cut.jsonl.gz").write_bytes(gzip.compress(b'{"prompt": "a", "completion": "b"}\n' * 50)[:40])
    with pytest.raises(DataError, match="cut.jsonl.gz: a gzip file that is truncated or corrupt"):
        read_rows(tmp_path / "cut.jsonl.gz")
    with pytest.raises(DataError, match="is a directory"):
        read_rows(tmp_path)


def test_prompts_longer_than_the_context_and_unknown_tokens(tokenizer, tmp_path):
    path = tmp_path / "x.jsonl"
    rows = [{"prompt": "red cat", "completion": "cat red"}, {"prompt": "red " * 40, "completion": "x"},
            {"prompt": "purple cat", "completion": "cat purple"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    file = read_rows(path)
    checked = usable_examples(file, tokenizer, context=16)
    assert len(checked.examples) == 2 and file.skipped == {"prompt longer than the model's context (16 tokens)": [2]}
    assert checked.unknown_tokens == 2 and checked.tokens == 8  # "purple" twice
    assert "WARNING 2 of 8 tokens (25.0%) are unknown to the tokenizer" in checked.describe("x")[-1]
    checked = usable_examples(read_rows(path), tokenizer, context=16, max_length=4)
    assert checked.too_long == 2  # 2 + 2 tokens + the EOS each; the long prompt is skipped, not counted
    assert "2 rows are longer than TRAINING_CONFIG.max_seq_length=4 tokens" in checked.describe("x")[-2]


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
