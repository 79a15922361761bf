"""sft and cpt: TRL's SFTTrainer.

sft trains on the rows as trainer/data.py tokenizes them (the prompt rendered as at generation, the
loss on the completion only); cpt on `{text}` rows, TRL tokenizing the whole text (loss on every
token). `packing`: TRL's best-fit-decreasing packing, which is padding-free — the rows of a block
are one sequence whose position ids restart per row and no attention mask is passed, so transformers
builds a block-diagonal causal mask (on sdpa and eager as on flash attention): no row sees another.
"""

from __future__ import annotations

import logging

from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from trainer.data import tokenize
from trainer.methods.common import TrainerInputs, rows, trl_args

log = logging.getLogger(__name__)


def _tokenized(examples, tokenizer, max_length: int) -> Dataset | None:
    if not examples:
        return None
    # input_ids and labels only: TRL's collator makes the mask (or, packed, the position ids).
    return Dataset.from_list([{k: v for k, v in tokenize(e, tokenizer, max_length).items() if k != "attention_mask"}
                              for e in examples])


def sft_config(inputs: TrainerInputs) -> SFTConfig:
    t = inputs.cfg.training
    return trl_args(SFTConfig, inputs.args, max_length=t.max_seq_length, packing=t.packing, packing_strategy="bfd",
                    padding_free=t.packing, dataset_text_field="text")


def build(inputs: TrainerInputs) -> SFTTrainer:
    t = inputs.cfg.training
    if t.method == "cpt":
        train, evaluation = rows(inputs.train), rows(inputs.evaluation)
    else:
        train = _tokenized(inputs.train, inputs.tokenizer, t.max_seq_length)
        evaluation = _tokenized(inputs.evaluation, inputs.tokenizer, t.max_seq_length)
    if t.packing and inputs.args.process_index == 0:
        log.info(f"method: {t.method}, packed: rows best-fit into blocks of {t.max_seq_length} tokens, "
                 "padding-free (position ids restart per row)")
    return SFTTrainer(model=inputs.model, args=sft_config(inputs), train_dataset=train, eval_dataset=evaluation,
                      processing_class=inputs.tokenizer, callbacks=inputs.callbacks)
