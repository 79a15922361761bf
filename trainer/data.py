"""Training data: read JSON / JSONL rows, recognise their format, render prompts, tokenise with
the loss on the completion only.

Formats (one per row; a row that fits none is skipped and counted):
- chat: {"messages": [{"role", "content"}, …]} — prompt = every turn before the last assistant
  turn, rendered with the tokenizer's chat template (generation prompt added); ground truth = the
  last assistant turn.
- {"prompt", "completion"}
- {"instruction", "input"?, "output"} — rendered as a user turn when the tokenizer has a chat
  template, else in the Alpaca layout.

The rendered prompt is exactly the text the model sees, at training and at generation: both
tokenise it with add_special_tokens=False (a BOS the tokenizer wants is put into the text).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ALPACA = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"


class DataError(ValueError):
    """The data cannot be used; the message names the file and what is accepted."""


@dataclass(frozen=True)
class Example:
    source_index: int  # the row's index in its file
    prompt: str  # rendered
    completion: str  # the ground truth


def read_rows(path: str | Path) -> list[Any]:
    """Rows of a JSONL file, or of a JSON file holding a list (or {"data": [...]})."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("[") or (stripped.startswith("{") and "\n" not in stripped.strip()):
        try:
            obj = json.loads(text)  # a list, or one object: a single row or a {"data": [...]} wrapper
        except json.JSONDecodeError as e:
            raise DataError(f"{path.name}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
        rows = obj if isinstance(obj, list) else obj["data"] if isinstance(obj.get("data"), list) else [obj]
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{path.name}: line {lineno} is not valid JSON ({e.msg})") from None
    return rows


def _bos_prefix(tokenizer) -> str:
    """The BOS text the tokenizer would add itself, so the rendered prompt carries it."""
    bos = tokenizer.bos_token
    if bos and bos in tokenizer.convert_ids_to_tokens(tokenizer("x").input_ids):
        return bos
    return ""


def render(row: Any, tokenizer) -> tuple[str, str] | None:
    """(prompt, completion) for one row, or None if it fits no format."""
    if not isinstance(row, dict):
        return None
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            return None
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last is None or last == 0:
            return None
        prompt = tokenizer.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True)
        return prompt, messages[last]["content"]
    if isinstance(row.get("prompt"), str) and isinstance(row.get("completion"), str):
        return _bos_prefix(tokenizer) + row["prompt"], row["completion"]
    if isinstance(row.get("instruction"), str) and isinstance(row.get("output"), str):
        inp = row.get("input") or ""
        if tokenizer.chat_template:
            content = row["instruction"] + (f"\n\n{inp}" if inp else "")
            messages = [{"role": "user", "content": content}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), row["output"]
        block = f"### Input:\n{inp}\n\n" if inp else ""
        prompt = ALPACA.format(instruction=row["instruction"], input_block=block)
        return _bos_prefix(tokenizer) + prompt, row["output"]
    return None


def load_examples(path: str | Path, tokenizer, *, log: Callable[[str], None] = print) -> list[Example]:
    """Every usable row of `path`. Skipped rows are counted in the log; none usable is an error."""
    rows = read_rows(path)
    examples, skipped = [], Counter()
    for i, row in enumerate(rows):
        rendered = render(row, tokenizer)
        if rendered is None or not rendered[1].strip():
            skipped["fits no format" if rendered is None else "empty completion"] += 1
            continue
        examples.append(Example(i, *rendered))
    name = Path(path).name
    if skipped:
        log(f"data: {name}: {len(examples)} rows used, {sum(skipped.values())} skipped ({dict(skipped)})")
    else:
        log(f"data: {name}: {len(examples)} rows")
    if not examples:
        raise DataError(
            f"{name}: no usable row. Accepted formats: chat {{\"messages\": [...]}} ending with an assistant "
            'turn, {"prompt", "completion"}, or {"instruction", "input", "output"}'
        )
    return examples


def tokenize(example: Example, tokenizer, max_length: int) -> dict[str, list[int]]:
    """input_ids / attention_mask / labels with labels = -100 on the prompt (loss on the
    completion only). Too long: the prompt loses tokens from the left, then the completion."""
    prompt_ids = tokenizer(example.prompt, add_special_tokens=False).input_ids
    completion_ids = tokenizer(example.completion, add_special_tokens=False).input_ids
    if tokenizer.eos_token_id is not None:
        completion_ids = completion_ids + [tokenizer.eos_token_id]  # the model learns to stop
    completion_ids = completion_ids[:max_length - 1]
    prompt_ids = prompt_ids[-(max_length - len(completion_ids)):]
    ids = prompt_ids + completion_ids
    return {
        "input_ids": ids,
        "attention_mask": [1] * len(ids),
        "labels": [-100] * len(prompt_ids) + completion_ids,
    }


def holdout_size(rows: int, fraction: float) -> int:
    """How many of `rows` split_holdout holds out: at least one, and at least one left to train on."""
    return min(max(1, round(rows * fraction)), rows - 1)


def split_holdout(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held-out) with a fixed seed; at least one row on each side."""
    import random

    idx = list(range(len(examples)))
    random.Random(seed).shuffle(idx)
    held = set(idx[:holdout_size(len(examples), fraction)])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]
