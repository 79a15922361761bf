"""The embedded demo: a task a tiny model learns on two CPU cores in a few minutes, a tokenizer
trained on its data in-process, and a small Llama-architecture model with fresh weights.

Nothing is fetched from a hub. The same builders make the tiny models the tests use.

The task: reverse a short list of words ("reverse: red cat blue" → "blue cat red"). Every word is
one token (a word-level tokenizer), so the model must learn to attend by position — trivial for
attention, impossible by memorising — and exact match climbs from 0 to most samples in a few
epochs, which makes the predictions table visibly useful.
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
#: be a try-out (the bundled 5,000 short rows × 8 epochs take about a minute on two cores, so
#: 20,000 rows about five).
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


def build_tokenizer(texts: list[str]):
    """A word-level tokenizer trained in-process on `texts` (split on whitespace).

    Word-level keeps sequences short (one token per word) so the demo trains fast on a CPU.
    """
    # Here, not at the top: the parent imports this module (its configuration) without the libraries.
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
    "num_train_epochs": 8, "learning_rate": 2e-3, "per_device_train_batch_size": 32,
    "warmup_steps": 0.05, "logging_steps": 20, "save_strategy": "no", "seed": 0,
    "max_seq_length": 32,
}
DEMO_PREDICTIONS = {
    "enabled": True, "sample_count": 24, "sample_frequency": "epoch", "baseline": True,
    "max_new_tokens": 8, "batch_size": 24,
}
