"""What every method's trainer is built from, and TRL's config made from the job's TrainingArguments."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from datasets import Dataset
from transformers import TrainingArguments

from trainer.config.job import JobConfig
from trainer.data import Example


@dataclass
class TrainerInputs:
    cfg: JobConfig
    args: TrainingArguments  # trainer/train.py `training_arguments`: the one place they are made
    model: object
    tokenizer: object
    train: list[Example]
    evaluation: list[Example] | None
    callbacks: list


def trl_args(config_class, args: TrainingArguments, **method_keys):
    """`config_class` (SFTConfig, DPOConfig, …) with every TrainingArguments field as the job set it:
    TRL's configs change some defaults (gradient checkpointing and bf16 on), which must not apply."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    return config_class(**values, **method_keys)


def rows(examples: list[Example] | None) -> Dataset | None:
    """The examples in TRL's form (trainer/pairs.py `trl_row`), as a datasets.Dataset."""
    return Dataset.from_list([e.trl for e in examples]) if examples else None


def reference_model(model):
    """The reference of DPO / KTO: None with an adapter (TRL disables it to get the starting model),
    else a frozen copy of the starting model (TRL would load one from a path a built model lacks)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        return None
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref
