"""dpo: TRL's DPOTrainer on {prompt, chosen, rejected} rows (strings or conversations).

The reference is the starting model: with LoRA / QLoRA the same model with its adapter disabled (as
TRL does), else a frozen copy made before training. `beta` is TRL's (the KL penalty's weight).
"""

from __future__ import annotations

from trl import DPOConfig, DPOTrainer

from trainer.methods.common import TrainerInputs, reference_model, rows, trl_args


def build(inputs: TrainerInputs) -> DPOTrainer:
    t = inputs.cfg.training
    args = trl_args(DPOConfig, inputs.args, beta=t.beta, max_length=t.max_seq_length)
    return DPOTrainer(model=inputs.model, ref_model=reference_model(inputs.model), args=args,
                      train_dataset=rows(inputs.train), eval_dataset=rows(inputs.evaluation),
                      processing_class=inputs.tokenizer, callbacks=inputs.callbacks)
