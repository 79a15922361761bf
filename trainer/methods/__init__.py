"""One module per training method, each building its TRL trainer from the job (README, "Methods").

`build_trainer` is the one entry: trainer/train.py loads the data and the model, then asks for the
method's trainer; every method gets the same callbacks (checkpoints, progress, prediction rounds).

| method | rows (trainer/pairs.py, trainer/data.py) | trainer |
|---|---|---|
| sft | chat, prompt/completion, instruction | TRL's SFTTrainer; `packing`: best-fit-decreasing, padding-free |
| dpo | {prompt, chosen, rejected} | DPOTrainer; the reference is the starting model (with LoRA: the adapter disabled) |
| orpo | {prompt, chosen, rejected} | trl.experimental.orpo's ORPOTrainer (no reference) |
| kto | {prompt, response, reward} (the platform's rlhf) | KTOTrainer; desirable when reward >= reward_threshold |
| cpt | {text} | SFTTrainer on the whole text (plain causal language modelling) |
"""

from __future__ import annotations

from trainer.methods.common import TrainerInputs


def build_trainer(inputs: TrainerInputs):
    """The TRL trainer of `inputs.cfg.training.method`."""
    method = inputs.cfg.training.method
    if method in ("sft", "cpt"):
        from trainer.methods.sft import build
    elif method == "dpo":
        from trainer.methods.dpo import build
    elif method == "orpo":
        from trainer.methods.orpo import build
    elif method == "kto":
        from trainer.methods.kto import build
    else:  # the schema accepts only the methods above
        raise AssertionError(f"no trainer for method {method!r}")
    return build(inputs)
