"""orpo: TRL's ORPOTrainer (trl.experimental.orpo) on {prompt, chosen, rejected} rows: the chosen
answer's language-modelling loss plus `beta` times the odds-ratio loss; no reference model."""

from __future__ import annotations

import warnings

from trainer.methods.common import TrainerInputs, rows, trl_args

with warnings.catch_warnings():  # "experimental": said once in the README, not in every pod log
    warnings.simplefilter("ignore")
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer


def build(inputs: TrainerInputs) -> ORPOTrainer:
    t = inputs.cfg.training
    args = trl_args(ORPOConfig, inputs.args, beta=t.beta, max_length=t.max_seq_length)
    return ORPOTrainer(model=inputs.model, args=args, train_dataset=rows(inputs.train),
                       eval_dataset=rows(inputs.evaluation), processing_class=inputs.tokenizer,
                       callbacks=inputs.callbacks)
