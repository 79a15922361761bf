"""Model and tokenizer loading: the bundled demo or a Hub id / local path; full fine-tuning, LoRA
or QLoRA (4-bit through BitsAndBytesConfig, adapters through peft)."""

from __future__ import annotations

import os
import tempfile
from typing import Callable

import torch

from trainer.config import JobConfig, TrainingConfig
from trainer.demo import build_model, demo_tokenizer

#: The demo model's size: learns the reversal task to most samples right in ~1 minute on 2 cores.
DEMO_MODEL_SIZE = {"hidden_size": 128, "layers": 4, "heads": 4}


def resolve_precision(training: TrainingConfig) -> str:
    """"bf16" / "fp16" / "no" (fp32). "auto": bf16 on a GPU that has it, fp32 on a CPU."""
    if training.mixed_precision != "auto":
        return training.mixed_precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def load_tokenizer(cfg: JobConfig):
    if cfg.is_demo:  # trained on the job's own data when it has some (trainer/datacheck.py)
        from trainer.datacheck import local_files, user_data

        return demo_tokenizer(local_files(cfg) if user_data(cfg) else None)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_name)
    if tokenizer.pad_token is None:  # batched training and generation need one; EOS is the usual stand-in
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _lora_config(training: TrainingConfig):
    from peft import LoraConfig

    lora = training.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )


def load_model(cfg: JobConfig, tokenizer, *, log: Callable[[str], None] = print):
    """The model to train, adapter-wrapped for LoRA / QLoRA."""
    training = cfg.training
    precision = resolve_precision(training)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    if cfg.is_demo:
        model = build_model(tokenizer, **DEMO_MODEL_SIZE)
        if training.finetuning != "qlora":
            return _with_adapter(model, training, log)
        # 4-bit weights are made by from_pretrained: save the fresh demo model and load it back
        # (the weights are in memory once loaded, so the folder can go).
        with tempfile.TemporaryDirectory(prefix="demo-model-") as source:
            model.save_pretrained(source)
            return _load_pretrained(source, training, dtype, log)
    return _load_pretrained(cfg.model_name, training, dtype, log)


def _load_pretrained(source: str, training: TrainingConfig, dtype, log):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": dtype}
    if training.finetuning == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        if torch.cuda.is_available():  # 4-bit weights cannot be moved after loading: place them per rank
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if training.finetuning == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=training.gradient_checkpointing
        )
    return _with_adapter(model, training, log)


def _with_adapter(model, training: TrainingConfig, log):
    if training.finetuning == "full":
        return model
    from peft import get_peft_model

    model = get_peft_model(model, _lora_config(training))
    trainable, total = model.get_nb_trainable_parameters()
    log(f"model: {training.finetuning} adapter r={training.lora.r}: {trainable:,} of {total:,} parameters trainable")
    return model


def save_final(model, tokenizer, output_dir, training: TrainingConfig, *, log: Callable[[str], None] = print):
    """Save the result: the full model, or the adapter (and, when asked, the merged model)."""
    final = output_dir / "final"
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    log(f"saved: {'adapter' if training.finetuning != 'full' else 'model'} and tokenizer in {final}")
    if training.finetuning != "full" and training.merge_adapter:
        merged_dir = output_dir / "final-merged"
        if training.finetuning == "qlora":
            log("merge_adapter: peft merges into the 4-bit weights and quantizes them again (rounding errors); "
                "the merged model stays 4-bit. For a 16-bit merge, load the base model in 16-bit and merge the adapter")
        merged = model.merge_and_unload()
        merged.save_pretrained(merged_dir)
        tokenizer.save_pretrained(merged_dir)
        log(f"saved: merged model in {merged_dir}")
