"""The platform's nested job configuration (PLATFORM.md §4), mapped onto this image's flat one.

The platform stores a job's configuration as `{model, tokenizer, training, lora, data, predictions,
…}` (its `training_configs.config_json`, and the file its deploy route writes for its own trainer:
lib/training/runpod-service.ts `generateTrainingConfig`, read by lib/training/standalone_trainer.py).
`map_platform()` turns it into the flat TRAINING_CONFIG keys plus what lives elsewhere (the model
name, the predictions block). Every key the platform emits is one of three things:
- honoured: mapped to a flat key (the flat schema validates its value);
- refused: this image cannot do it (`training.method "dpo"`), a Problem naming the key and why;
- without effect here, and said so in the startup report (a note), never silently.
Keys the platform never emits are errors, as in the flat shape (a typo must not fall back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

#: The top-level keys that make a TRAINING_CONFIG the platform's nested shape.
NESTED_KEYS = ("model", "tokenizer", "training", "data", "predictions")


class _Platform(BaseModel):
    # Unknown keys are errors; values are checked here only as far as the mapping needs, the
    # flat schema checks the rest and the message names the platform's key.
    model_config = ConfigDict(extra="forbid")


class PlatformModel(_Platform):
    name: str | None = None
    trust_remote_code: bool = False
    torch_dtype: Literal["auto", "float16", "bfloat16", "float32"] | None = None
    device_map: Literal["auto", "cuda", "cpu"] | None = None


class PlatformTokenizer(_Platform):
    name: str | None = None
    trust_remote_code: bool | None = None
    padding_side: Literal["left", "right"] | None = None
    add_eos_token: bool | None = None


class PlatformQuantization(_Platform):
    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] | None = None
    bnb_4bit_compute_dtype: Literal["float16", "bfloat16", "float32"] | None = None
    bnb_4bit_use_double_quant: bool | None = None


class PlatformLoraConfig(_Platform):
    r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    target_modules: list[str] | str | None = None
    bias: Literal["none", "all", "lora_only"] | None = None
    task_type: str | None = None
    modules_to_save: list[str] | None = None


class PlatformLora(_Platform):
    """The top-level `lora` block (runpod-service.ts writes `alpha`/`dropout`; stored jobs too)."""

    r: int | None = None
    alpha: int | None = None
    dropout: float | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    target_modules: list[str] | str | None = None
    bias: Literal["none", "all", "lora_only"] | None = None
    task_type: str | None = None


class PlatformTraining(_Platform):
    method: str = "sft"
    use_lora: bool = True
    num_epochs: float | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    learning_rate: float | None = None
    lr_scheduler_type: str | None = None
    warmup_ratio: float | None = None
    warmup_steps: int | None = None
    save_steps: int | None = None
    save_total_limit: int | None = None
    save_strategy: str | None = None
    evaluation_strategy: str | None = None
    eval_strategy: str | None = None
    eval_steps: int | None = None
    logging_steps: int | None = None
    gradient_accumulation_steps: int | None = None
    max_length: int | None = None
    bf16: bool | None = None
    fp16: bool | None = None
    optim: str | None = None
    max_grad_norm: float | None = None
    weight_decay: float | None = None
    adam_beta1: float | None = None
    adam_beta2: float | None = None
    adam_epsilon: float | None = None
    gradient_checkpointing: bool | None = None
    group_by_length: bool | None = None
    packing: bool | None = None
    pretokenize: bool | None = None
    use_streaming: bool | None = None
    dataloader_num_workers: int | None = None
    dataloader_prefetch_factor: int | None = None
    dataloader_pin_memory: bool | None = None
    load_best_model_at_end: bool | None = None
    metric_for_best_model: str | None = None
    lora_config: PlatformLoraConfig | None = None
    lora_r: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    quantization: PlatformQuantization | None = None
    tokenizer_padding_side: Literal["left", "right"] | None = None
    # The preference / RL methods' keys (see map_platform: mapped, or said to be without effect).
    beta: float | None = None
    max_prompt_length: int | None = None
    ppo_epochs: int | None = None
    clip_range: float | None = None
    clip_range_value: float | None = None
    vf_coef: float | None = None
    entropy_coef: float | None = None
    response_length: int | None = None
    distributed: dict[str, Any] | None = None
    checkpoint_resume: dict[str, Any] | None = None


class PlatformData(_Platform):
    strategy: str | None = None
    generation_type: str | None = None
    max_samples: int | None = None
    train_split: float | None = None
    eval_split: float | None = None
    dataset_format: str | None = None


class PlatformEvaluation(_Platform):
    metrics: list[str] | None = None
    eval_steps: int | None = None


class PlatformTensorboard(_Platform):
    enabled: bool = False
    log_dir: str | None = None


class PlatformJob(_Platform):
    """TRAINING_CONFIG in the platform's shape: its config_json, or the file its deploy route writes."""

    model: PlatformModel = PlatformModel()
    tokenizer: PlatformTokenizer = PlatformTokenizer()
    training: PlatformTraining = PlatformTraining()
    lora: PlatformLora | None = None
    data: PlatformData = PlatformData()
    predictions: dict[str, Any] | None = None  # validated by PredictionsConfig, as PREDICTIONS_CONFIG
    evaluation: PlatformEvaluation | None = None
    tensorboard: PlatformTensorboard | None = None
    provider: dict[str, Any] | None = None
    tools: list[Any] | None = None
    seed: int | None = None
    eval_split: float | None = None
    dataset_path: str | None = None
    output_dir: str | None = None
    execution_id: str | None = None


@dataclass
class Mapped:
    """The platform configuration in this image's terms."""

    training: dict[str, Any]  # flat TRAINING_CONFIG keys
    origin: dict[str, str]  # flat key → the platform key it came from (for messages and the report)
    model_name: str | None
    predictions: dict[str, Any] | None
    refusals: list[tuple[str, str]] = field(default_factory=list)  # (platform key, why)
    notes: list[str] = field(default_factory=list)  # keys without effect here, and why


#: The platform's training.method → this image's method (trainer/methods/). "rlhf" is the platform's
#: PPO against an untrained reward head; its rows {prompt, response, reward} are rated answers, which
#: KTO trains on honestly (desirable when reward >= reward_threshold), so it is trained as KTO.
METHODS = {"sft": "sft", "dpo": "dpo", "orpo": "orpo", "rlhf": "kto", "cpt": "cpt"}
#: data.dataset_format values that fit each platform method (None: not given, the rows decide).
DATASET_FORMATS = {"dpo": ("dpo", "orpo"), "orpo": ("dpo", "orpo"), "rlhf": ("rlhf",), "cpt": ("raw_text", "text")}
#: Formats that are some other method's data: an sft job naming one is a misfit.
NOT_SFT_FORMATS = ("dpo", "orpo", "rlhf", "raw_text")
#: PPO's keys: the platform's rlhf is trained as KTO here, which has no value head, clipping or rollouts.
PPO_KEYS = ("ppo_epochs", "clip_range", "clip_range_value", "vf_coef", "entropy_coef", "response_length")


def is_platform_shape(data: dict) -> bool:
    """The nested shape has at least one of its section keys at the top; the flat shape has none."""
    return any(k in data for k in NESTED_KEYS)


def map_platform(job: PlatformJob) -> Mapped:
    """The flat keys for `job`, what it refuses and what has no effect here."""
    t, flat, origin = job.training, {}, {}
    m = Mapped(training=flat, origin=origin, model_name=job.model.name, predictions=job.predictions)

    def put(flat_key: str, value, platform_key: str) -> None:
        if value is not None:
            flat[flat_key], origin[flat_key] = value, platform_key

    def refuse(key: str, why: str) -> None:
        m.refusals.append((key, why))

    _map_method(job, m, put)
    if t.use_streaming:
        refuse("training.use_streaming", "true: datasets are read whole; set it to false")
    if job.data.max_samples is not None:
        refuse("data.max_samples", "not supported: trim the dataset itself")
    if job.tools:
        refuse("tools", "tool definitions are not supported by this image")
    for key in ("distributed", "checkpoint_resume"):
        value = getattr(t, key)
        if value and value.get("enabled", True):
            why = ("processes come from NUM_PROCESSES (default: one per GPU)" if key == "distributed"
                   else "a restarted pod resumes from the newest complete checkpoint in OUTPUT_DIR by itself")
            refuse(f"training.{key}", f"not supported: {why}; remove it or set enabled to false")

    # model and tokenizer
    put("trust_remote_code", job.model.trust_remote_code or bool(job.tokenizer.trust_remote_code), "model.trust_remote_code")
    put("torch_dtype", job.model.torch_dtype, "model.torch_dtype")
    if job.tokenizer.name and job.tokenizer.name != job.model.name:
        put("tokenizer_name", job.tokenizer.name, "tokenizer.name")
    put("padding_side", job.tokenizer.padding_side or t.tokenizer_padding_side, "tokenizer.padding_side")
    if job.tokenizer.add_eos_token is False:
        refuse("tokenizer.add_eos_token", "false: every completion ends with EOS here (the model learns to stop)")
    if job.model.device_map:
        m.notes.append(f'model.device_map "{job.model.device_map}": each training process holds the whole '
                       "model on its own device (accelerate); it is not split across GPUs")

    # the training loop
    put("num_train_epochs", t.num_epochs, "training.num_epochs")
    put("max_steps", t.max_steps, "training.max_steps")
    put("per_device_train_batch_size", t.batch_size, "training.batch_size")
    put("per_device_eval_batch_size", t.eval_batch_size, "training.eval_batch_size")
    put("gradient_accumulation_steps", t.gradient_accumulation_steps, "training.gradient_accumulation_steps")
    put("learning_rate", t.learning_rate, "training.learning_rate")
    put("lr_scheduler_type", t.lr_scheduler_type, "training.lr_scheduler_type")
    # The platform's trainer passes both to transformers 4, where warmup_steps > 0 overrides the
    # ratio; transformers 5 takes a ratio as a float warmup_steps < 1.
    if t.warmup_steps:
        put("warmup_steps", t.warmup_steps, "training.warmup_steps")
        if t.warmup_ratio:
            m.notes.append(f"training.warmup_ratio {t.warmup_ratio:g} not used: warmup_steps {t.warmup_steps} "
                           "overrides it (as in the platform's own trainer)")
    elif t.warmup_ratio is not None:
        put("warmup_steps", t.warmup_ratio, "training.warmup_ratio")
    put("save_strategy", t.save_strategy, "training.save_strategy")
    put("save_steps", t.save_steps, "training.save_steps")
    put("save_total_limit", t.save_total_limit, "training.save_total_limit")
    put("eval_strategy", t.eval_strategy, "training.eval_strategy")
    put("eval_strategy", t.evaluation_strategy, "training.evaluation_strategy")
    put("eval_steps", t.eval_steps, "training.eval_steps")
    put("logging_steps", t.logging_steps, "training.logging_steps")
    put("max_seq_length", t.max_length, "training.max_length")
    if t.bf16 or t.fp16:
        put("mixed_precision", "bf16" if t.bf16 else "fp16", "training.bf16" if t.bf16 else "training.fp16")
    elif t.bf16 is False or t.fp16 is False:
        put("mixed_precision", "no", "training.bf16")
    for key in ("optim", "max_grad_norm", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                "gradient_checkpointing", "group_by_length", "dataloader_num_workers", "dataloader_pin_memory",
                "load_best_model_at_end", "metric_for_best_model"):
        put(key, getattr(t, key), f"training.{key}")
    if t.dataloader_prefetch_factor is not None and not t.dataloader_num_workers:
        m.notes.append("training.dataloader_prefetch_factor not used: dataloader_num_workers is 0 (no workers prefetch)")
    else:
        put("dataloader_prefetch_factor", t.dataloader_prefetch_factor, "training.dataloader_prefetch_factor")
    if t.pretokenize is False:
        m.notes.append("training.pretokenize false: rows are always tokenized once, before training")
    put("seed", job.seed, "seed")

    # adapters and quantization: LoRA as the platform's trainer reads it (the top-level `lora`
    # block when there is one, else training.lora_config, else the legacy lora_* keys)
    q = t.quantization or PlatformQuantization()
    if t.use_lora:
        put("finetuning", "qlora" if q.load_in_4bit else "lora", "training.use_lora")
        _map_lora(job, m, put)
        if q.load_in_4bit and q.load_in_8bit:
            refuse("training.quantization", "load_in_4bit and load_in_8bit are both true: choose one")
        quant = {k: v for k, v in q.model_dump().items() if v is not None and k != "load_in_4bit"}
        if q.load_in_8bit or q.load_in_4bit:
            put("quantization", quant, "training.quantization")
    else:
        put("finetuning", "full", "training.use_lora")
        if q.load_in_4bit or q.load_in_8bit:
            m.notes.append("training.quantization not used: use_lora is false, and quantized weights are not fully "
                           "fine-tuned (the platform's trainer loads the full model unquantized too)")

    # data
    if job.data.eval_split is not None:
        put("eval_split", job.data.eval_split, "data.eval_split")
        if job.eval_split is not None and job.eval_split != job.data.eval_split:
            m.notes.append(f"eval_split {job.eval_split:g} not used: data.eval_split {job.data.eval_split:g} is")
    else:
        put("eval_split", job.eval_split, "eval_split")
    if job.data.train_split is not None:
        m.notes.append(f"data.train_split {job.data.train_split:g}: every row not held out for evaluation is trained on")

    informational = [k for k, present in (
        ("data.strategy", job.data.strategy), ("data.generation_type", job.data.generation_type),
        ("evaluation", job.evaluation), ("provider", job.provider), ("execution_id", job.execution_id),
        ("dataset_path", job.dataset_path), ("output_dir", job.output_dir),
    ) if present]
    if informational:
        m.notes.append(f"{', '.join(informational)}: describe how the platform made the data and ran its own "
                       "trainer; this pod uses DATASET_URL / DATASET_PATH, OUTPUT_DIR and the training block")
    if job.tensorboard and job.tensorboard.enabled:
        m.notes.append("tensorboard.enabled: no TensorBoard here; metrics go to the pod log "
                       "(and to METRICS_API_URL when it is set)")
    return m


def _map_lora(job: PlatformJob, m: Mapped, put) -> None:
    t = job.training
    if job.lora is not None:
        lora, source = job.lora, "lora"
        values = {"r": lora.r, "alpha": lora.alpha if lora.alpha is not None else lora.lora_alpha,
                  "dropout": lora.dropout if lora.dropout is not None else lora.lora_dropout,
                  "target_modules": lora.target_modules, "bias": lora.bias}
        task = lora.task_type
        if t.lora_config is not None:
            m.notes.append("training.lora_config not used: the top-level lora block is (as in the platform's trainer)")
    elif t.lora_config is not None:
        lc, source = t.lora_config, "training.lora_config"
        values = {"r": lc.r, "alpha": lc.lora_alpha, "dropout": lc.lora_dropout, "target_modules": lc.target_modules,
                  "bias": lc.bias, "modules_to_save": lc.modules_to_save}
        task = lc.task_type
    else:
        source, task = "training.lora_r", None
        values = {"r": t.lora_r, "alpha": t.lora_alpha, "dropout": t.lora_dropout}
    if task not in (None, "CAUSAL_LM"):
        m.refusals.append((f"{source}.task_type", f'"{task}": only causal language models ("CAUSAL_LM") are trained here'))
    values = {k: v for k, v in values.items() if v is not None}
    if values:
        put("lora", values, source)


def _map_method(job: PlatformJob, m: Mapped, put) -> None:
    """training.method and its keys; data.dataset_format must fit the method (no conversion is exact)."""
    t, fmt = job.training, job.data.dataset_format
    method = METHODS.get(t.method)
    if method is None:
        m.refusals.append(("training.method", f'"{t.method}": accepted: {", ".join(METHODS)}'))
        return
    put("method", method, "training.method")
    fits = DATASET_FORMATS.get(t.method)
    if fmt is not None and (fmt not in fits if fits else fmt in NOT_SFT_FORMATS):
        accepted = (" or ".join(f'"{f}"' for f in fits) if fits
                    else "chat, prompt/completion or instruction data (not " + ", ".join(NOT_SFT_FORMATS) + ")")
        m.refusals.append(("data.dataset_format", f'"{fmt}" does not fit training.method "{t.method}": it takes '
                           f"{accepted}; rows cannot be converted exactly between these formats"))
    if t.method == "rlhf":
        m.notes.append('training.method "rlhf": trained as KTO (TRL\'s KTOTrainer) on the {prompt, response, reward} '
                       "rows, a row desirable when its reward >= reward_threshold (0.5 unless set); the platform's PPO "
                       "scored answers with an untrained reward head, so its rewards carried no signal")
    if t.packing:
        if method in ("sft", "cpt"):
            put("packing", True, "training.packing")
        else:
            m.notes.append(f"training.packing not used: {t.method} trains on pairs (TRL packs only sft and cpt)")
    if t.beta is not None:
        if method in ("dpo", "orpo", "kto"):
            put("beta", t.beta, "training.beta")
        else:
            m.notes.append(f"training.beta not used: {t.method} has no beta")
    if t.max_prompt_length is not None:
        m.notes.append("training.max_prompt_length not used: TRL 1.16 truncates the whole sequence to "
                       "training.max_length (keeping the prompt's start)")
    unused = [k for k in PPO_KEYS if getattr(t, k) is not None]
    if unused:
        why = "rlhf is trained as KTO here (no PPO rollouts)" if t.method == "rlhf" else "used only by PPO"
        m.notes.append(f"training.{', training.'.join(unused)} not used: {why}")
