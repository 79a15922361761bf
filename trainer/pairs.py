"""The row formats of the methods beyond SFT (PLATFORM.md §6), recognised and rendered for trainer/data.py:

- preference (dpo, orpo): {"prompt", "chosen", "rejected"}: strings, or conversations (TRL's
  conversational form: `prompt` a list of turns, `chosen` / `rejected` lists holding the answer's
  assistant turn). The ground truth of a prediction is the chosen answer.
- rated (kto, the platform's "rlhf"): {"prompt", "response", "reward"?}: strings, reward a number;
  a row is desirable when its reward clears TRAINING_CONFIG.reward_threshold (trainer/methods/kto.py).
- text (cpt): {"text"}: plain causal language modelling on the whole text; no prompt to predict from.

`trl_row` gives the row as TRL's trainers take it (TRL tokenizes and applies the chat template itself).
"""

from __future__ import annotations

import math
from typing import Any

PREFERENCE_KEYS = ("prompt", "chosen", "rejected")
#: The formats of this module (their examples carry the row in TRL's form).
PAIRED = ("preference", "rated", "text")
RATED_KEYS = ("prompt", "response")


def is_text(value: Any) -> bool:
    """A string that can be encoded (a lone surrogate from a bad escape cannot be tokenised)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _turns(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and is_text(m.get("content")) for m in value)


def answer_text(value: Any) -> str:
    """A chosen / rejected / response answer as text: the string, or its last turn's content."""
    return value if isinstance(value, str) else value[-1]["content"]


def _prompt_ok(value: Any) -> bool:
    return (is_text(value) and bool(value.strip())) or (_turns(value) and any(m["content"].strip() for m in value))


def pair_format(row: dict) -> tuple[str | None, str | None] | None:
    """(format, None) or (None, reason) for a row of these formats; None when it is none of them."""
    if all(k in row for k in PREFERENCE_KEYS):
        conversational = isinstance(row["prompt"], list)
        answers = (row["chosen"], row["rejected"])
        if not all(_turns(a) if conversational else is_text(a) for a in answers):
            return None, "wrong types (prompt, chosen and rejected: all strings or all conversations)"
        if not _prompt_ok(row["prompt"]):
            return None, "empty prompt"
        if not all(answer_text(a).strip() for a in answers):
            return None, "empty chosen or rejected"
        return "preference", None
    if "response" in row and "prompt" in row:
        reward = row.get("reward")
        if reward is not None and (isinstance(reward, bool) or not isinstance(reward, (int, float))
                                   or not math.isfinite(reward)):
            return None, "reward not a number"
        if not (is_text(row["prompt"]) or _turns(row["prompt"])) or not (is_text(row["response"]) or _turns(row["response"])):
            return None, "wrong types"
        if not _prompt_ok(row["prompt"]):
            return None, "empty prompt"
        if not answer_text(row["response"]).strip():
            return None, "empty response"
        return "rated", None
    if set(row) == {"text"}:
        return ("text", None) if is_text(row["text"]) and row["text"].strip() else (None, "empty text")
    return None


def render_prompt(prompt: Any, tokenizer, bos: str) -> str:
    """The prompt as the model sees it at generation: a conversation through the chat template."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    return bos + prompt


def render_pair(row: dict, fmt: str, tokenizer, bos: str) -> tuple[str, str]:
    """(rendered prompt, ground truth): the chosen answer, the rated response, or ("", text)."""
    if fmt == "text":
        return "", row["text"]
    answer = row["chosen"] if fmt == "preference" else row["response"]
    return render_prompt(row["prompt"], tokenizer, bos), answer_text(answer)


def pair_texts(row: dict) -> list[str]:
    """Every text of a row of these formats (what the demo's tokenizer is trained on)."""
    texts = []
    for key in ("prompt", "chosen", "rejected", "response", "text"):
        value = row.get(key)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts += [t for m in value if isinstance(m, dict) for t in (f"{m.get('role')}:", str(m.get("content")))]
    return texts


def _joined(prompt: str, answer: str) -> str:
    """`answer` as TRL appends it to `prompt` (plain text): a space between them unless one is there."""
    return answer if not prompt or prompt[-1].isspace() or answer[:1].isspace() else " " + answer


def trl_row(row: dict, fmt: str) -> dict[str, Any]:
    """The row in TRL's form for its trainer (prompt strings without a BOS: TRL's tokenizer call adds it)."""
    if fmt == "preference":
        if isinstance(row["prompt"], str):  # TRL joins prompt + answer as text: keep the words apart
            return {"prompt": row["prompt"], "chosen": _joined(row["prompt"], row["chosen"]),
                    "rejected": _joined(row["prompt"], row["rejected"])}
        return {k: row[k] for k in PREFERENCE_KEYS}
    if fmt == "rated":
        completion = row["response"]
        if isinstance(row["prompt"], list) and isinstance(completion, str):
            completion = [{"role": "assistant", "content": completion}]
        elif isinstance(completion, str):
            completion = _joined(row["prompt"], completion)
        return {"prompt": row["prompt"], "completion": completion, "reward": row.get("reward")}
    return {"text": row["text"]}


def rated_labels(examples, threshold: float) -> list[bool | None]:
    """Each rated example's KTO label: desirable when its reward >= `threshold`; None without a reward."""
    rewards = [e.trl.get("reward") for e in examples]
    return [None if r is None else r >= threshold for r in rewards]


def rated_problem(examples, threshold: float) -> str | None:
    """Why KTO cannot train on these rated examples, or None: it needs rows of both kinds."""
    rewards = [e.trl["reward"] for e in examples if e.trl.get("reward") is not None]
    if not rewards:
        return ('no {"prompt", "response", "reward"} row has a reward: without one nothing says which answers are '
                "good (kto, the platform's rlhf, needs rewards)")
    good = sum(r >= threshold for r in rewards)
    if good in (0, len(rewards)):
        kind = "desirable" if good else "undesirable"
        return (f"every rewarded row is {kind} at TRAINING_CONFIG.reward_threshold {threshold:g} (rewards range "
                f"{min(rewards):g} to {max(rewards):g}): kto needs desirable and undesirable rows; set reward_threshold "
                "between the good and the bad rewards")
    return None
