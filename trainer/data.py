"""Training data: read JSON / JSONL rows (plain or gzip), check each, recognise its format, render
prompts, tokenise with the loss on the completion only.

One reader for everyone: the parent's data check (trainer/datacheck.py, also `entrypoint.py
check`) and the training processes read rows through `read_rows` and `usable_examples`, so a row
the check counts as usable is the row that trains, and a refusal reads the same wherever it happens.

Formats (one per row; a row that fits none is skipped and counted by reason, with its line):
- chat: {"messages": [{"role", "content"}, …]} — prompt = every turn before the last assistant
  turn, rendered with the tokenizer's chat template (generation prompt added); ground truth = the
  last assistant turn.
- {"prompt", "completion"}
- {"instruction", "input"?, "output"} — rendered as a user turn when the tokenizer has a chat
  template, else in the Alpaca layout.
A file is JSONL (one row a line; a bad line is skipped), or one JSON document: a list of rows, a
{"data": [...]} wrapper, or a single row. gzip is recognised by its magic bytes, whatever the
name; a UTF-8 byte-order mark is dropped.

The rendered prompt is exactly the text the model sees, at training and at generation: both
tokenise it with add_special_tokens=False (a BOS the tokenizer wants is put into the text).
"""

from __future__ import annotations

import gzip
import json
import logging
import random
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.config.schema import METHOD_FORMATS
from trainer.pairs import PAIRED, answer_text, is_text, pair_format, pair_texts, render_pair, trl_row

log = logging.getLogger(__name__)

ALPACA = "### Instruction:\n{instruction}\n\n{input_block}### Response:\n"
GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
SHOWN_LINES = 5  # line numbers named per reason; the count covers the rest
FORMATS_HELP = ('accepted rows: chat {"messages": [...]} ending with an assistant turn, {"prompt", "completion"}, '
                'or {"instruction", "input", "output"} (sft); {"prompt", "chosen", "rejected"} (dpo, orpo); '
                '{"prompt", "response", "reward"} (kto, the platform\'s rlhf); {"text"} (cpt); as JSONL, a JSON list, '
                'or {"data": [...]}; plain or gzip')
#: What each row format is called in messages (the methods that take it: trainer/config/schema.py METHOD_FORMATS).
FORMAT_NAMES = {"chat": 'chat {"messages"}', "prompt/completion": '{"prompt", "completion"}',
                "instruction": '{"instruction", "input", "output"}', "preference": '{"prompt", "chosen", "rejected"}',
                "rated": '{"prompt", "response", "reward"}', "text": '{"text"}'}


class DataError(ValueError):
    """The data cannot be used; the message names the file and what is accepted."""


@dataclass(frozen=True)
class Example:
    source_index: int  # the row's position in its file (blank lines not counted)
    prompt: str  # rendered
    completion: str  # the ground truth (a preference row's chosen answer)
    format: str = "prompt/completion"
    rejected: str | None = None  # a preference row's rejected answer, as text
    trl: dict | None = field(default=None, compare=False)  # dpo / orpo / kto / cpt: the row in TRL's form (trainer/pairs.py)


@dataclass
class FileRows:
    """A file's rows as parsed: (line, position, row) for each JSON value, and the lines that
    could not be parsed, by reason."""

    name: str
    unit: str = "line"  # how `line` counts: "line" in JSONL, "row" (1-based index) in a JSON document
    rows: list[tuple[int, int, Any]] = field(default_factory=list)
    skipped: dict[str, list[int]] = field(default_factory=dict)

    def skip(self, reason: str, line: int) -> None:
        self.skipped.setdefault(reason, []).append(line)


def read_bytes(path: str | Path, name: str | None = None) -> bytes:
    """The file's content, decompressed if it is gzip (by its magic bytes), without a BOM."""
    path = Path(path)
    name = name or path.name
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{name}: is a directory, not a file ({FORMATS_HELP})") from None
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except OSError as e:
        raise DataError(f"{name}: cannot be read ({e.strerror})") from None
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:  # EOFError: cut short; BadGzipFile is an OSError
            raise DataError(f"{name}: a gzip file that is truncated or corrupt ({e}); "
                            "download or compress it again") from None
    return data[len(BOM):] if data.startswith(BOM) else data


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def read_rows(path: str | Path, name: str | None = None) -> FileRows:
    """Every JSON value of a file, with its line; unparsable lines counted by reason."""
    name = name or Path(path).name
    data = read_bytes(path, name)
    out = FileRows(name)
    head = data.lstrip()[:1]
    if head in (b"[", b"{"):
        document = _read_document(data, name)
        if document is not None:
            out.unit = "row"
            for position, row in enumerate(document):
                out.rows.append((position + 1, position, row))  # a JSON document: the row's index
            return out
    position = 0
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        position += 1
        if b"\x00" in raw:  # a raw NUL: Postgres text cannot hold it, and it is never meant
            out.skip("NUL byte", lineno)
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.skip("invalid UTF-8", lineno)
            continue
        try:
            out.rows.append((lineno, position - 1, json.loads(text)))
        except json.JSONDecodeError:
            out.skip("invalid JSON", lineno)
    return out


def _read_document(data: bytes, name: str) -> list[Any] | None:
    """The rows of a file that is one JSON document; None when it is JSONL (read line by line).
    A file starting with `[` is a JSON list and must parse whole; one starting with `{` is a
    single object or a {"data": [...]} wrapper if it parses whole, else JSONL."""
    is_list = data.lstrip()[:1] == b"["
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        if not is_list:
            return None
        raise DataError(f"{name}: invalid UTF-8 at byte {e.start} (line {_line_of(data, e.start)}); "
                        "a JSON list is read whole, so one bad byte makes it unreadable (JSONL skips a bad line)") from None
    except json.JSONDecodeError as e:
        if not is_list:
            return None
        raise DataError(f"{name}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); "
                        "a JSON list is read whole, so one error makes it unreadable (JSONL skips a bad line)") from None
    if isinstance(obj, list):
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        return obj["data"]
    return [obj]


def row_format(row: Any) -> tuple[str | None, str | None]:
    """(format, None) for a usable row, else (None, the reason it cannot be used). Needs no tokenizer."""
    if not isinstance(row, dict):
        return None, "not a JSON object"
    other = pair_format(row)
    if other is not None:
        return other
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and is_text(m.get("content")) for m in messages):
            return None, "wrong types"
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            return None, "chat without a prompt and an assistant turn"
        if not messages[last]["content"].strip():
            return None, "empty completion"
        if not any(m["content"].strip() for m in messages[:last]):
            return None, "empty prompt"
        return "chat", None
    for fmt, prompt_keys, answer in (("prompt/completion", ("prompt",), "completion"),
                                     ("instruction", ("instruction", "input"), "output")):
        if prompt_keys[0] in row or answer in row:
            if prompt_keys[0] not in row or answer not in row:
                return None, "fits no format"  # half a format: a key missing
            values = [row.get(k) for k in prompt_keys[1:] if row.get(k) is not None]
            if not all(is_text(v) for v in (row.get(prompt_keys[0]), row.get(answer), *values)):
                return None, "wrong types"
            if not row[prompt_keys[0]].strip():
                return None, "empty prompt"
            if not row[answer].strip():
                return None, "empty completion"
            return fmt, None
    return None, "fits no format"


def _bos_prefix(tokenizer) -> str:
    """The BOS text the tokenizer would add itself, so the rendered prompt carries it."""
    bos = tokenizer.bos_token
    if bos and bos in tokenizer.convert_ids_to_tokens(tokenizer("x").input_ids):
        return bos
    return ""


def render(row: Any, tokenizer) -> tuple[str, str] | None:
    """(prompt, completion) for one row, or None if it fits no format."""
    fmt, _reason = row_format(row)
    if fmt in PAIRED:
        return render_pair(row, fmt, tokenizer, _bos_prefix(tokenizer))
    if fmt == "chat":
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = tokenizer.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True)
        return prompt, messages[last]["content"]
    if fmt == "prompt/completion":
        return _bos_prefix(tokenizer) + row["prompt"], row["completion"]
    if fmt == "instruction":
        inp = row.get("input") or ""
        if tokenizer.chat_template:
            content = row["instruction"] + (f"\n\n{inp}" if inp else "")
            messages = [{"role": "user", "content": content}]
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), row["output"]
        block = f"### Input:\n{inp}\n\n" if inp else ""
        prompt = ALPACA.format(instruction=row["instruction"], input_block=block)
        return _bos_prefix(tokenizer) + prompt, row["output"]
    return None


def row_texts(row: dict) -> list[str]:
    """Every text of a usable row (what a tokenizer trained on the data must cover)."""
    if "messages" in row:
        return [t for m in row["messages"] for t in (f"{m['role']}:", m["content"])]
    if row_format(row)[0] in PAIRED:
        return pair_texts(row)
    return [v for k, v in row.items() if k in ("prompt", "completion", "instruction", "input", "output")
            and isinstance(v, str)]


@dataclass
class Checked:
    """A file's usable examples, their formats, the skipped lines by reason, and unknown tokens."""

    file: FileRows
    examples: list[Example]
    formats: Counter
    unknown_tokens: int = 0
    tokens: int = 0
    too_long: int = 0  # rows longer than max_length: trained on with the prompt cut from the left
    max_length: int | None = None

    def describe(self, label: str) -> list[str]:
        """Log lines: usable rows per format, then each reason with its first lines."""
        usable = ", ".join(f"{n} {fmt}" for fmt, n in self.formats.most_common()) or "none"
        n = len(self.examples)
        lines = [f"data: {label}: {n} usable row{'' if n == 1 else 's'} ({usable})"]
        skipped = sum(len(v) for v in self.file.skipped.values())
        if skipped:
            parts = []
            for reason, where in sorted(self.file.skipped.items(), key=lambda kv: -len(kv[1])):
                shown = ", ".join(map(str, where[:SHOWN_LINES])) + (", …" if len(where) > SHOWN_LINES else "")
                parts.append(f"{reason}: {len(where)} ({self.file.unit}{'s' if len(where) > 1 else ''} {shown})")
            lines.append(f"data: {label}: {skipped} row{'' if skipped == 1 else 's'} skipped — " + "; ".join(parts))
        if self.too_long:
            lines.append(f"data: {label}: {self.too_long} rows are longer than TRAINING_CONFIG.max_seq_length="
                         f"{self.max_length} tokens: they are trained on with the prompt cut from the left")
        if self.unknown_tokens:
            share = self.unknown_tokens / max(self.tokens, 1)
            lines.append(f"data: {label}: WARNING {self.unknown_tokens:,} of {self.tokens:,} tokens ({share:.1%}) are "
                         "unknown to the tokenizer (<unk>): the model can neither read nor write them")
        return lines


def usable_examples(file: FileRows, tokenizer=None, *, context: int | None = None,
                    max_length: int | None = None, method: str = "sft") -> Checked:
    """The usable rows of `file`, rendered when a tokenizer is given. A row is skipped (and counted
    under its reason in `file.skipped`) when it fits no format, when its format is not `method`'s,
    or, with a tokenizer and a known `context`, when its prompt leaves no room in the model's
    context to generate."""
    checked = Checked(file, [], Counter(), max_length=max_length)
    candidates = []
    takes = METHOD_FORMATS[method]
    for line, position, row in file.rows:
        fmt, reason = row_format(row)
        if fmt is not None and fmt not in takes:
            reason = (f"{FORMAT_NAMES[fmt]} rows do not fit TRAINING_CONFIG.method {method!r}, which takes "
                      + " or ".join(FORMAT_NAMES[f] for f in takes))
        if reason:
            file.skip(reason, line)
        else:
            candidates.append((line, position, fmt, row))
    if tokenizer is None:
        checked.formats.update(fmt for _l, _p, fmt, _r in candidates)
        checked.examples = [Example(position, "", "", fmt, None, trl_row(row, fmt) if fmt in PAIRED else None)
                            for _l, position, fmt, row in candidates]
        return checked
    rendered = [render(row, tokenizer) for _l, _p, _f, row in candidates]
    bos = tokenizer.bos_token
    if method == "orpo" and bos:  # TRL's ORPO puts a BOS before every prompt it trains on: generation sees it too
        rendered = [(p if p.startswith(bos) else bos + p, c) for p, c in rendered]
    unk = tokenizer.unk_token_id
    prompt_ids = tokenizer([p for p, _c in rendered], add_special_tokens=False).input_ids if rendered else []
    completion_ids = tokenizer([c for _p, c in rendered], add_special_tokens=False).input_ids if rendered else []
    for (line, position, fmt, row), (prompt, completion), p_ids, c_ids in zip(
            candidates, rendered, prompt_ids, completion_ids):
        if context is not None and len(p_ids) >= context and fmt != "text":
            file.skip(f"prompt longer than the model's context ({context} tokens)", line)
            continue
        checked.tokens += len(p_ids) + len(c_ids)
        if max_length is not None and len(p_ids) + len(c_ids) + 1 > max_length:  # + the EOS
            checked.too_long += 1
        if unk is not None:
            checked.unknown_tokens += p_ids.count(unk) + c_ids.count(unk)
        checked.formats[fmt] += 1
        checked.examples.append(Example(position, prompt, completion, fmt,
                                        answer_text(row["rejected"]) if fmt == "preference" else None,
                                        trl_row(row, fmt) if fmt in PAIRED else None))
    return checked


def load_examples(path: str | Path, tokenizer, *, label: str | None = None, name: str | None = None,
                  context: int | None = None) -> list[Example]:
    """Every usable row of `path`; skipped rows are counted by reason with their lines in the log.
    None usable is a DataError naming `label` (the variable and file)."""
    return check_file(read_rows(path, name), tokenizer, label=label, context=context).examples


def check_file(file: FileRows, tokenizer, *, label: str | None = None, context: int | None = None,
               method: str = "sft") -> Checked:
    """`load_examples` on rows already read: the usable examples with the file's rows, logged;
    None usable is a DataError naming `label`."""
    label = label or file.name
    checked = usable_examples(file, tokenizer, context=context, method=method)
    for line in checked.describe(label):
        log.info(line)
    if not checked.examples:
        raise DataError(f"{label}: no usable row; {FORMATS_HELP}")
    return checked


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
    idx = list(range(len(examples)))
    random.Random(seed).shuffle(idx)
    held = set(idx[:holdout_size(len(examples), fraction)])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]
