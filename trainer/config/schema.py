"""The job's schema: TRAINING_CONFIG and PREDICTIONS_CONFIG as typed, strict pydantic models (an
unknown key is an error, every key has a default and says what it accepts)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SAMPLE_COUNT = 500  # a round generates for every sample: more would dominate training time
MAX_EPOCHS = 10_000  # far beyond any fine-tuning; 1e308 would overflow the step count
MAX_SEED = 2**32 - 1  # numpy's seed range (transformers' set_seed seeds numpy too)
MAX_WAIT_S = 24 * 3600  # a write or the closing drain: a day is already no limit; more overflows the clock


#: transformers' own lists (trainer_utils.SchedulerType, training_args.OptimizerNames), written out
#: because importing them imports torch, and a bad value must be refused before anything heavy
#: loads. tests/test_config.py checks them against the installed transformers.
SCHEDULER_TYPES = (
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt",
    "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr", "warmup_stable_decay", "greedy",
)
OPTIMIZERS = (
    "adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor", "adamw_anyprecision",
    "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad", "adamw_bnb_8bit", "adamw_8bit",
    "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit", "paged_adamw_8bit", "paged_ademamix_32bit",
    "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit", "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit",
    "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit", "galore_adafactor", "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise", "lomo", "adalomo", "grokadamw", "schedule_free_radam",
    "schedule_free_adamw", "schedule_free_sgd", "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw",
)
#: transformers' own default (with torch >= 2.8), kept so that not naming one changes nothing.
DEFAULT_OPTIM = "adamw_torch_fused"
#: Optimizers whose implementation is in a package this image may not have (checked up front).
OPTIMIZER_PACKAGES = {
    "galore": "galore_torch", "lomo": "lomo_optim", "adalomo": "lomo_optim", "grokadamw": "grokadamw",
    "schedule_free": "schedulefree", "apollo": "apollo_torch", "adamw_torch_4bit": "torchao",
    "adamw_torch_8bit": "torchao", "adamw_anyprecision": "torchdistx", "adamw_torch_xla": "torch_xla",
    "adamw_torch_npu_fused": "torch_npu",
}


def bitsandbytes_optimizer(name: str) -> bool:
    """bitsandbytes implements it (paged and 8-bit states): it needs a CUDA GPU."""
    return ("paged" in name or "bnb" in name or name.startswith(("lion", "ademamix_8bit"))
            or name in ("adamw_8bit",))


#: The training methods (trainer/methods/): each trains with its TRL trainer on its own data format.
METHODS = ("sft", "dpo", "orpo", "kto", "cpt")
#: The row formats (trainer/data.py `row_format`) each method trains on.
METHOD_FORMATS = {
    "sft": ("chat", "prompt/completion", "instruction"),
    "dpo": ("preference",), "orpo": ("preference",),
    "kto": ("rated",),
    "cpt": ("text",),
}


class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default). Infinity and NaN
    # are no number of epochs, seconds or rate: refused here, not by a crash after the report.
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


class LoraConfig(_Strict):
    r: int = Field(16, gt=0, description="adapter rank")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (lora_alpha)")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description='module names to adapt, or "all-linear"'
    )
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] | None = Field(None, description="modules trained fully and saved beside the adapter")


class QuantizationConfig(_Strict):
    """bitsandbytes settings (BitsAndBytesConfig): 4-bit with finetuning "qlora", or 8-bit LoRA."""

    load_in_8bit: bool = Field(False, description='8-bit base weights under a LoRA adapter (finetuning "lora")')
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_compute_dtype: Literal["float16", "bfloat16", "float32"] | None = Field(
        None, description="default: the training precision")
    bnb_4bit_use_double_quant: bool = True


class TrainingConfig(_Strict):
    """TRAINING_CONFIG: how to fine-tune. Every key has a default."""

    num_train_epochs: float = Field(3, gt=0, le=MAX_EPOCHS)
    max_steps: int = Field(-1, description="overrides epochs when > 0")
    learning_rate: float = Field(2e-5, gt=0)
    per_device_train_batch_size: int = Field(4, gt=0)
    per_device_eval_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    max_seq_length: int = Field(1024, gt=8)
    eval_strategy: Literal["no", "steps", "epoch"] | None = Field(
        None, description='default: "epoch" when there is evaluation data, else "no"'
    )
    eval_steps: int | None = Field(None, gt=0)
    eval_split: float = Field(0.0, ge=0, lt=0.5, description="held-out fraction when no EVAL_DATASET_PATH")
    save_strategy: Literal["no", "steps", "epoch"] = "steps"
    save_steps: int = Field(500, gt=0)
    save_total_limit: int | None = Field(2, gt=0)
    logging_steps: int = Field(10, gt=0)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    warmup_steps: float = Field(0, ge=0, description="an integer number of steps, or a ratio of all steps in [0, 1)")
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler_type: Literal[SCHEDULER_TYPES] = "linear"  # type: ignore[valid-type]
    lr_scheduler_kwargs: dict[str, Any] = Field(default_factory=dict, description="e.g. min_lr_rate, num_decay_steps")
    optim: Literal[OPTIMIZERS] = Field(  # type: ignore[valid-type]
        DEFAULT_OPTIM, description=f"bitsandbytes ones (paged_*, *_8bit) fall back to {DEFAULT_OPTIM} on a CPU")
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_epsilon: float = Field(1e-8, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    group_by_length: bool = Field(False, description="batches of similar length (less padding)")
    dataloader_num_workers: int = Field(0, ge=0)
    dataloader_prefetch_factor: int | None = Field(None, gt=0, description="needs dataloader_num_workers > 0")
    dataloader_pin_memory: bool = True
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a GPU that has it; a CPU always trains in fp32"
    )
    torch_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="the weights' dtype when loaded; auto: from the precision (fp32 on a CPU)")
    trust_remote_code: bool = Field(False, description="run the model repository's own code (from_pretrained)")
    tokenizer_name: str | None = Field(None, description="default: MODEL_NAME")
    padding_side: Literal["left", "right"] | None = None
    finetuning: Literal["full", "lora", "qlora"] = "full"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    quantization: QuantizationConfig = Field(default_factory=QuantizationConfig)
    merge_adapter: bool = Field(False, description="also save the adapter merged into the base model")
    method: Literal[METHODS] = Field(  # type: ignore[valid-type]
        "sft", description="sft (prompt/completion, chat, instruction rows), dpo / orpo ({prompt, chosen, "
        "rejected}), kto ({prompt, response, reward}: the platform's rlhf), cpt ({text}): trainer/methods/")
    packing: bool = Field(False, description="sft / cpt: TRL's best-fit-decreasing padding-free packing")
    beta: float = Field(0.1, gt=0, description="dpo / orpo / kto: TRL's beta (DPO's KL weight, ORPO's lambda)")
    reward_threshold: float = Field(
        0.5, description="kto: a {prompt, response, reward} row is desirable when reward >= this, else undesirable")

    @property
    def quant_bits(self) -> int | None:
        """4 (QLoRA), 8 (8-bit LoRA) or None (unquantized)."""
        return 4 if self.finetuning == "qlora" else 8 if self.quantization.load_in_8bit else None


class ValidatorsConfig(_Strict):
    json_parse: bool = False
    json_schema: dict[str, Any] | str | None = Field(None, description="an inline JSON schema (object, or JSON text)")
    json_schema_path: str | None = Field(None, description="a JSON schema file (the legacy form)")


class PredictionsConfig(_Strict):
    """PREDICTIONS_CONFIG, in the platform's shape, plus generation and delivery settings."""

    enabled: bool = False
    sample_count: int = Field(10, ge=0, le=MAX_SAMPLE_COUNT, description="at least 1 when enabled")
    sample_frequency: Literal["eval", "epoch", "steps"] = "epoch"
    step_interval: int | None = None
    samples_path: str | None = None
    validators: ValidatorsConfig = Field(default_factory=ValidatorsConfig)
    baseline: bool = Field(False, description="a round at step 0, before training")
    max_new_tokens: int = Field(128, ge=1, le=8192)
    do_sample: bool = False
    temperature: float | None = Field(None, gt=0)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    batch_size: int = Field(8, ge=1, le=256, description="prompts per generate call")
    max_text_chars: int = Field(100_000, ge=100, description="cap per text field; longer is truncated and flagged")
    write_timeout_s: float = Field(30, gt=0, le=MAX_WAIT_S)
    max_request_bytes: int = Field(4_000_000, ge=10_000)
    drain_timeout_s: float = Field(120, ge=0, le=MAX_WAIT_S, description="at the end, how long to wait for pending writes")
