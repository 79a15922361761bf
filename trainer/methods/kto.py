"""kto: TRL's KTOTrainer on the platform's "rlhf" rows {prompt, response, reward}.

The platform trained these with PPO against a reward model that was the base model with an
untrained classification head, so its rewards were noise. The rows themselves say which answers are
good: a row is desirable when its reward >= TRAINING_CONFIG.reward_threshold (default 0.5: a 0/1
thumbs or a ±1 rating both split there), else undesirable; KTO learns from exactly that. Which rows
can be used is decided before training (trainer/pairs.py `rated_labels`, run by the data check).
"""

from __future__ import annotations

from datasets import Dataset
from trl import KTOConfig, KTOTrainer

from trainer.methods.common import TrainerInputs, reference_model, trl_args
from trainer.pairs import rated_labels


def _rows(examples, threshold: float) -> Dataset | None:
    """Rows without a reward cannot be labelled: left out (the data check said how many)."""
    if not examples:
        return None
    labelled = [(e, label) for e, label in zip(examples, rated_labels(examples, threshold)) if label is not None]
    return Dataset.from_list([{"prompt": e.trl["prompt"], "completion": e.trl["completion"], "label": label}
                              for e, label in labelled])


def build(inputs: TrainerInputs) -> KTOTrainer:
    t = inputs.cfg.training
    # KTO's KL estimate pairs each completion with its batch neighbour's prompt: TRL needs that order fixed.
    args = trl_args(KTOConfig, inputs.args, beta=t.beta, max_length=t.max_seq_length)
    args.train_sampling_strategy = "sequential"
    return KTOTrainer(model=inputs.model, ref_model=reference_model(inputs.model), args=args,
                      train_dataset=_rows(inputs.train, t.reward_threshold),
                      eval_dataset=_rows(inputs.evaluation, t.reward_threshold),
                      processing_class=inputs.tokenizer, callbacks=inputs.callbacks)
