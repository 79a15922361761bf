"""The embedded demo: a task a tiny model learns on two CPU cores in about a minute, a tokenizer
trained on its data in-process, and a small Llama-architecture model with fresh weights.

Nothing is fetched from a hub. The same builders make the tiny models the tests use.

The task: reverse a short list of words ("reverse: red cat blue" → "blue cat red"). The model must
learn to attend by position — trivial for attention, impossible by memorising — and exact match
climbs from 0 to most samples within the first epochs, which makes the predictions table visibly
useful.

The tokenizer is byte-level BPE with a small vocabulary, trained on the job's data: frequent words
are one token, and anything else (a code, a number, an identifier the training data never showed
whole) is written from pieces the training answers share — so the model can learn a user's task
whose evaluation answers it has never seen (bench/bench_own_task.py measures one).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from trainer.data import read_rows, row_format, row_texts

#: MODEL_NAME value that selects the bundled demo model (nothing is downloaded).
DEMO_MODEL = "demo"
DATA_DIR = Path(__file__).parent / "demo_data"
TRAIN_FILE = DATA_DIR / "train.jsonl"
EVAL_FILE = DATA_DIR / "eval.jsonl"

WORDS = (
    "red blue green black white gold pink gray "
    "cat dog fox owl bee ant cow elk yak emu"
).split()
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
# A plain chat template, so chat-format datasets work with the demo tokenizer too.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
CHAT_WORDS = ["system:", "user:", "assistant:"]
#: The demo model's context (positions): a prompt this long leaves no room to answer.
DEMO_CONTEXT = 256
#: A user's data the CPU demo takes: beyond this, training from scratch on a CPU takes too long to
#: be a try-out (the bundled 5,000 short rows × 4 epochs train in well under a minute on two cores;
#: 20,000 rows of a user's, longer, take several).
DEMO_MAX_ROWS = 20_000
DEMO_MAX_WORDS = 1_000_000


def make_task_rows(count: int, seed: int) -> list[dict[str, str]]:
    """`count` prompt/completion rows of the reversal task (3 to 5 words each)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 5))]
        rows.append({"prompt": "reverse: " + " ".join(words), "completion": " ".join(reversed(words))})
    return rows


def write_bundled_data() -> None:
    """Regenerate demo_data/ (committed; kept here so the data is reproducible)."""
    DATA_DIR.mkdir(exist_ok=True)
    for path, count, seed in ((TRAIN_FILE, 5000, 0), (EVAL_FILE, 200, 1)):
        with path.open("w") as f:
            for row in make_task_rows(count, seed):
                f.write(json.dumps(row) + "\n")


#: The demo tokenizer's vocabulary: the 256 bytes, the special tokens, and merges up to this size.
#: Small on purpose: frequent words still become one token (the reversal task's 18 words do), but a
#: code, a number or an identifier stays in pieces every row shares, so an answer the model never
#: saw whole is made of tokens it has learned to write.
DEMO_VOCAB = 1024
#: A merge needs this many occurrences in the data: a string seen a few times stays in pieces.
DEMO_MIN_FREQUENCY = 8


def build_tokenizer(texts: list[str], *, vocab_size: int = DEMO_VOCAB, min_frequency: int = DEMO_MIN_FREQUENCY):
    """A byte-level BPE tokenizer trained in-process on `texts`.

    Byte-level: every string has a tokenization (no <unk>) and decodes back to itself, spaces and
    newlines included. Digits are one token each (as Llama's and Qwen's tokenizers do), so a number
    is written digit by digit whatever its value. The vocabulary is small (`DEMO_VOCAB`), which
    keeps sequences short for frequent words and makes rare strings out of shared pieces.
    """
    # Here, not at the top: the parent imports this module (its configuration) without the libraries.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([*texts, " ".join(CHAT_WORDS)], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_word_tokenizer(texts: list[str]):
    """A word-level tokenizer trained on `texts` (split on whitespace): one token per word, <unk> for
    any other. The demo's former tokenizer; the tests use it where they need a tokenizer that cannot
    spell everything (<unk> handling, answers the model never learned to write)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins word tokens with single spaces
    trainer = trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS.values()))
    tok.train_from_iterator([*texts, " ".join(CHAT_WORDS)], trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tokenizer, *, hidden_size: int = 128, layers: int = 2, heads: int = 4, seed: int = 0):
    """A small Llama-architecture causal LM with fresh weights, sized for `tokenizer`."""
    import torch  # here, not at the top: the parent imports this module without torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=DEMO_CONTEXT,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)  # fresh weights, but the same ones every run
    return LlamaForCausalLM(config)


def demo_tokenizer(data_files: list[Path] | None = None):
    """The demo's tokenizer, trained on `data_files` (the job's own data: its training, evaluation
    and samples files), else on the bundled data. Trained on the data it will read, it knows every
    word of it: a user's data is not all <unk> to it."""
    texts = []
    for path in data_files or (TRAIN_FILE, EVAL_FILE):
        for _line, _position, row in read_rows(path).rows:
            if row_format(row)[0]:
                texts += row_texts(row)
    return build_tokenizer(texts)


if __name__ == "__main__":
    write_bundled_data()


#: The demo's own defaults: under the user's keys, which override only the ones they name. No
#: eval_strategy: it follows the data (the demo's own data has an evaluation file, a user's may not).
DEMO_TRAINING = {
    "num_train_epochs": 4, "learning_rate": 2e-3, "per_device_train_batch_size": 32,
    "warmup_steps": 0.05, "logging_steps": 20, "save_strategy": "no", "seed": 0,
    "max_seq_length": 64,
}
DEMO_PREDICTIONS = {
    "enabled": True, "sample_count": 24, "sample_frequency": "epoch", "baseline": True,
    "max_new_tokens": 32, "batch_size": 24,
}
