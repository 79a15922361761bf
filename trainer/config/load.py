"""The job's configuration: every environment variable the image reads, parsed once, typed.

`load_config()` is the only place the environment is read. It returns a `JobConfig` or raises
`ConfigError` listing every problem at once (a pod restarted per fix costs a GPU start each time),
each naming the variable, the key and what is accepted — before any model or dataset is loaded.
TRAINING_CONFIG is this image's flat shape or the platform's nested job configuration
(trainer/config/platform.py maps it); user keys override only the defaults they name. Secrets live in `Secrets` (pydantic SecretStr): they are never in reprs, argv,
TrainingArguments or logs; children of `accelerate launch` read them from the environment again.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.demo import DEMO_MODEL, EVAL_FILE, TRAIN_FILE
from trainer.fetch import is_url
from trainer.config.platform import PlatformJob, is_platform_shape, map_platform

#: Distinct exit codes (from sysexits.h) so the platform can tell why a pod stopped.
EXIT_CONFIG = 78  # EX_CONFIG: bad or incomplete configuration; the message names the fix
EXIT_PREFLIGHT = 77  # EX_NOPERM: the database refused (wrong key, table missing, no write)
EXIT_MIGRATION = 76  # EX_PROTOCOL: a migration failed to apply
MAX_SAMPLE_COUNT = 500  # a round generates for every sample: more would dominate training time


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


@dataclass(frozen=True)
class Problem:
    """One configuration problem: the variable, the key inside its JSON, what is wrong and accepted."""

    variable: str
    message: str
    key: str | None = None

    def __str__(self) -> str:
        return f"{self.variable}.{self.key}: {self.message}" if self.key else f"{self.variable}: {self.message}"


class ConfigError(Exception):
    """Bad input: every problem found, each naming its variable (and key) and what is accepted.
    `variable` and `key` are the first problem's; `problems` holds them all."""

    def __init__(self, variable: str | list[Problem], message: str | None = None, key: str | None = None):
        self.problems = list(variable) if isinstance(variable, list) else [Problem(variable, message or "", key)]
        self.variable, self.key = self.problems[0].variable, self.problems[0].key
        if len(self.problems) == 1:
            text = str(self.problems[0])
        else:
            text = f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default).
    model_config = ConfigDict(extra="forbid", validate_default=True)


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

    num_train_epochs: float = Field(3, gt=0)
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
    seed: int = 42
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
    seed: int = 42
    batch_size: int = Field(8, ge=1, le=256, description="prompts per generate call")
    max_text_chars: int = Field(100_000, ge=100, description="cap per text field; longer is truncated and flagged")
    write_timeout_s: float = Field(30, gt=0)
    max_request_bytes: int = Field(4_000_000, ge=10_000)
    drain_timeout_s: float = Field(120, ge=0, description="at the end, how long to wait for pending writes")


class Environment(BaseSettings):
    """The raw environment, read by pydantic-settings. JSON variables stay text here so that a
    malformed one can be reported with its position; `load_config` parses them."""

    # An empty variable (`KEY=` in an env file, "" in a template) means unset.
    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", env_ignore_empty=True)

    JOB_ID: str | None = None
    USER_ID: str | None = None
    MODEL_NAME: str = DEMO_MODEL
    DATASET_PATH: str | None = None
    DATASET_URL: str | None = None
    EVAL_DATASET_PATH: str | None = None
    OUTPUT_DIR: str | None = None
    TRAINING_CONFIG: str | None = None
    PREDICTIONS_CONFIG: str | None = None
    SUPABASE_URL: str | None = None
    SUPABASE_SERVICE_KEY: SecretStr | None = None
    SUPABASE_ANON_KEY: SecretStr | None = None
    SUPABASE_DB_URL: SecretStr | None = None
    NUM_PROCESSES: int | None = Field(None, gt=0)
    RUNPOD_GPU_COUNT: int | None = Field(None, ge=0)
    JOB_TOKEN: SecretStr | None = None
    METRICS_API_URL: str | None = None
    ALERT_API_URL: str | None = None
    INTERNAL_API_KEY: SecretStr | None = None
    HF_TOKEN: SecretStr | None = None
    HF_REPO_NAME: str | None = None
    FRESH_RUN: bool = False


#: What each variable is for, the mode that needs it, and whether it is a secret. The startup
#: report, .env.example, runpod.json and the README's table are checked against this list.
VARIABLES: dict[str, tuple[str, str, bool]] = {
    "JOB_ID": ("the job; every prediction row and platform call carries it (any text)", "database", False),
    "USER_ID": ("the job's owner; only they can read its predictions (a UUID)", "database", False),
    "MODEL_NAME": (f'Hugging Face id or local path; "{DEMO_MODEL}" = the bundled demo model', "all", False),
    "DATASET_PATH": ("training data: JSON / JSONL file (plain or gzip) or https URL", "all (not the demo)", False),
    "DATASET_URL": ("the platform's name for the training data URL (signed, gzip); same as DATASET_PATH", "all (not the demo)", False),
    "EVAL_DATASET_PATH": ("evaluation data: JSON / JSONL file or https URL", "optional", False),
    "OUTPUT_DIR": ("checkpoints, final model, predictions.jsonl (the image: /workspace/outputs)", "all", False),
    "TRAINING_CONFIG": ("JSON: this image's flat keys, or the platform's nested job configuration", "all", False),
    "PREDICTIONS_CONFIG": ("JSON: enabled, sample_count, sample_frequency, generation, …", "predictions", False),
    "SUPABASE_URL": ("the Supabase project URL: predictions written through its API", "database (supabase)", False),
    "SUPABASE_SERVICE_KEY": ("the service_role key: the only key RLS lets write", "database (supabase)", True),
    "SUPABASE_ANON_KEY": ("reported only, never used to write (RLS rejects it)", "none", True),
    "SUPABASE_DB_URL": ("Postgres URL: migrations; the direct writer when SUPABASE_URL is unset", "database (postgres)", True),
    "NUM_PROCESSES": ("training processes; default one per visible GPU, one on a CPU", "optional", False),
    "RUNPOD_GPU_COUNT": ("set by RunPod: GPUs of the pod (the default process count)", "optional", False),
    "JOB_TOKEN": ("the job's token: Authorization: Bearer on the platform's metrics calls", "platform (metrics)", True),
    "METRICS_API_URL": ("the platform's metrics route: loss curves and progress are POSTed there", "platform (metrics)", False),
    "ALERT_API_URL": ("the platform's alert route: job_started / job_completed / job_failed", "platform (alerts)", False),
    "INTERNAL_API_KEY": ("X-API-Key on the alert calls", "platform (alerts)", True),
    "HF_TOKEN": ("Hugging Face token: gated models, and the upload to HF_REPO_NAME", "optional", True),
    "HF_REPO_NAME": ("Hub repository the final model / adapter is uploaded to at the end", "optional", False),
    "FRESH_RUN": ("1: start the job over (previous outputs moved aside) even if it completed or failed", "optional", False),
}

#: The image's own defaults (set in the Dockerfile), used when OUTPUT_DIR / HF_HOME are unset OR
#: empty: an env file's `OUTPUT_DIR=` must not move the outputs off the volume.
IMAGE_OUTPUT_DIR, IMAGE_HF_HOME = "IMAGE_OUTPUT_DIR", "IMAGE_HF_HOME"


@dataclass(frozen=True)
class Secrets:
    """The secret values, apart from everything that gets logged or saved."""

    supabase_service_key: SecretStr | None
    supabase_anon_key: SecretStr | None
    supabase_db_url: SecretStr | None
    job_token: SecretStr | None = None
    internal_api_key: SecretStr | None = None
    hf_token: SecretStr | None = None


StorageMode = Literal["local", "supabase", "postgres"]


@dataclass(frozen=True)
class JobConfig:
    """Everything a run needs, validated. Secrets stay in `secrets` and print as '**********'."""

    job_id: str
    user_id: str | None
    model_name: str
    dataset_path: str
    eval_dataset_path: str | None
    output_dir: Path
    training: TrainingConfig
    predictions: PredictionsConfig
    storage: StorageMode
    storage_reason: str
    supabase_url: str | None
    secrets: Secrets
    num_processes: int | None
    env: Environment
    #: "flat", "platform" (the nested job configuration) or "none" (TRAINING_CONFIG unset)
    config_shape: str = "none"
    #: flat key → where its value came from: "default", "demo", "TRAINING_CONFIG" or
    #: "platform config (training.learning_rate)"; only keys not at their default are listed
    training_sources: dict[str, str] | None = None
    predictions_source: str = "default"  # where the predictions block came from
    notes: tuple[str, ...] = ()  # platform keys without effect here, and why
    output_dir_source: str = "default"
    platform: Any = None  # trainer.pod.platform.PlatformCalls: which calls to the platform are on

    @property
    def is_demo(self) -> bool:
        return self.model_name == DEMO_MODEL

    @property
    def has_eval(self) -> bool:
        return self.eval_dataset_path is not None or self.training.eval_split > 0

    @property
    def predictions_path(self) -> Path:
        return self.output_dir / "predictions.jsonl"

    @property
    def json_schema(self) -> dict[str, Any] | None:
        """The validators' JSON schema: inline (object or JSON text) or from json_schema_path."""
        v = self.predictions.validators
        if v.json_schema is not None:
            return json.loads(v.json_schema) if isinstance(v.json_schema, str) else v.json_schema
        return json.loads(Path(v.json_schema_path).read_text()) if v.json_schema_path else None


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


class _Problems(list):
    """The problems found so far; load_config raises them together at the end."""

    def add(self, variable: str, message: str, key: str | None = None) -> None:
        self.append(Problem(variable, message, key))


def _quoted_hint(raw: str) -> str:
    s = raw.strip()
    if len(s) > 1 and s[0] == s[-1] and s[0] in "'\"":
        return ("; the value is wrapped in quotes, which an env file (docker --env-file) passes on literally: "
                "remove the outer quotes")
    return ""


def _parse_json(variable: str, raw: str | None, problems: _Problems) -> dict | None:
    """The JSON object in `raw` (None when unset or unusable; the problem is recorded)."""
    if raw is None or not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        problems.add(variable, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}{_quoted_hint(raw)}")
        return None
    if not isinstance(data, dict):
        problems.add(variable, f"must be a JSON object, got {type(data).__name__}{_quoted_hint(raw)}")
        return None
    return data


def _pydantic_problems(variable: str, model: type[BaseModel], e: ValidationError, problems: _Problems,
                       rename: Callable[[tuple], str] | None = None) -> None:
    """Every error of `e`, phrased as `VARIABLE.key: what is wrong (got …); accepted: …`."""
    for err in e.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = (rename(loc) if rename else ".".join(loc)) or None
        if err["type"] == "extra_forbidden":
            owner = model
            for part in loc[:-1]:  # the nested model the unknown key sits in
                owner = _submodel(owner, part)
            accepted = ", ".join(owner.model_fields) if owner else "see the README"
            problems.add(variable, f"unknown key; accepted: {accepted}", key)
            continue
        msg = err["msg"]
        if "input" in err and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        problems.add(variable, msg, key)


def _submodel(model, name: str):
    """The pydantic model of field `name` of `model` (through Optional), or None."""
    if model is None or name not in model.model_fields:
        return None
    annotation = model.model_fields[name].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _merge(*layers: tuple[dict, str]) -> tuple[dict, dict[str, str]]:
    """Layers of keys, later ones overriding only the keys they name (one level into sub-blocks
    such as lora); and where each key's value came from."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for values, source in layers:
        for k, v in values.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
            sources[k] = source if not callable(source) else source(k)
    return merged, sources


def _check_path(variable: str, path: str, problems: _Problems, key: str | None = None) -> None:
    if not is_url(path) and not Path(path).exists():
        problems.add(variable, f"file not found: {path!r} (a JSON / JSONL file or an https URL)", key)


def _storage_mode(env: Environment, problems: _Problems) -> tuple[StorageMode, str]:
    """Derive the storage mode from what is set; a half-configured database mode is a problem."""
    url, key, anon, db = env.SUPABASE_URL, env.SUPABASE_SERVICE_KEY, env.SUPABASE_ANON_KEY, env.SUPABASE_DB_URL
    if url and key:
        return "supabase", "SUPABASE_URL and SUPABASE_SERVICE_KEY are set"
    if url or key or anon:
        if anon and not key:
            problems.add(
                "SUPABASE_SERVICE_KEY",
                "not set, but SUPABASE_ANON_KEY is: the anon key cannot insert under RLS; set SUPABASE_SERVICE_KEY "
                "(Project Settings → API → service_role)",
            )
        else:
            missing = [n for n, v in (("SUPABASE_URL", url), ("SUPABASE_SERVICE_KEY", key)) if not v]
            problems.add(
                missing[0],
                f"database mode is half-configured: missing {', '.join(missing)} "
                "(set both to write predictions to Supabase, or neither to keep them locally)",
            )
        return "local", "half-configured"
    if db:
        return "postgres", "SUPABASE_DB_URL is set and SUPABASE_URL is not: direct Postgres writer"
    return "local", "SUPABASE_URL is not set"


def _refuse_sharded(predictions: PredictionsConfig) -> None:
    """Sharded training with predictions: FSDP2 generates in lockstep on every rank (see
    predictions/rounds.py), so it is allowed; what cannot generate is refused here, before the
    model loads, naming the alternative.

    - FSDP1 (FSDP_VERSION=1): the Trainer's callbacks see the inner module with flattened,
      sharded parameters; generating from it is wrong or hangs. FSDP_VERSION=2 (the default this
      image sets) works.
    - DeepSpeed: not installed in this image (and ZeRO-3 generation is untested here).
    """
    if not predictions.enabled:
        return
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes"):
        raise ConfigError(
            "ACCELERATE_USE_DEEPSPEED", "DeepSpeed is not installed in this image, and predictions under ZeRO are not "
            "supported. Use FSDP instead (ACCELERATE_USE_FSDP=1: FSDP2, every rank generates in lockstep), or DDP "
            "(unset it: every GPU keeps a full copy), or set PREDICTIONS_CONFIG.enabled to false",
        )
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes")
    if fsdp and os.environ.get("FSDP_VERSION", "2").strip() != "2":
        raise ConfigError(
            "FSDP_VERSION", f"predictions need FSDP2, got {os.environ['FSDP_VERSION']!r}: under FSDP1 the model the "
            "callbacks see holds flattened shards and cannot generate. Set FSDP_VERSION=2 (or unset it: 2 is the "
            "default here), or set PREDICTIONS_CONFIG.enabled to false",
        )


def _check_uuid(variable: str, value: str | None, why: str, problems: _Problems) -> str | None:
    if not value:
        problems.add(variable, f"not set; {why}")
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        problems.add(variable, f"must be a UUID (the platform's auth user id), got {value!r}")
        return None


def _image_default(variable: str, image_variable: str, fallback: str | None) -> tuple[str | None, str]:
    """`variable`'s value, or the image's default when it is unset or empty, and which it was."""
    value = os.environ.get(variable, "").strip()
    if value:
        return value, "set"
    image = os.environ.get(image_variable, "").strip()
    if image:
        return image, f"the image's default, {image_variable}"
    return fallback, "default"


def _platform_model_name(raw: str | None) -> str | None:
    """model.name of a platform-shaped TRAINING_CONFIG, read ahead: it decides whether the demo's
    defaults apply (a malformed value is reported by _training_config)."""
    try:
        data = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and is_platform_shape(data) and isinstance(data.get("model"), dict):
        name = data["model"].get("name")
        return name if isinstance(name, str) and name else None
    return None


def _training_config(env: Environment, demo: bool, problems: _Problems):
    """TRAINING_CONFIG (flat or the platform's nested shape) merged over the defaults."""
    data = _parse_json("TRAINING_CONFIG", env.TRAINING_CONFIG, problems)
    shape, user, origin, mapped = "none", {}, {}, None
    if data is not None and is_platform_shape(data):
        shape = "platform"
        try:
            mapped = map_platform(PlatformJob.model_validate(data))
        except ValidationError as e:
            _pydantic_problems("TRAINING_CONFIG", PlatformJob, e, problems)
            return None, shape, {}, None
        for key, why in mapped.refusals:
            problems.add("TRAINING_CONFIG", why, key)
        user, origin = mapped.training, mapped.origin
    elif data is not None:
        shape, user = "flat", data
    layers = [(DEMO_TRAINING, "demo")] if demo else []
    label = (lambda k: f"platform config ({origin.get(k, k)})") if shape == "platform" else "TRAINING_CONFIG"
    merged, sources = _merge(*layers, (user, label))
    try:
        training = TrainingConfig.model_validate(merged)
    except ValidationError as e:
        def rename(loc: tuple) -> str:  # the platform's key, where the value came from one
            return ".".join((origin.get(loc[0], loc[0]), *loc[1:])) if loc else ""
        _pydantic_problems("TRAINING_CONFIG", TrainingConfig, e, problems, rename if shape == "platform" else None)
        return None, shape, sources, mapped
    return training, shape, sources, mapped


def _predictions_config(env: Environment, demo: bool, platform_block: dict | None, problems: _Problems):
    """PREDICTIONS_CONFIG, or the platform configuration's predictions block, over the defaults."""
    own = _parse_json("PREDICTIONS_CONFIG", env.PREDICTIONS_CONFIG, problems)
    user, source = own, "PREDICTIONS_CONFIG"
    if own is not None and platform_block is not None and own != platform_block:
        problems.add("PREDICTIONS_CONFIG", "differs from TRAINING_CONFIG.predictions: set one of them "
                     "(PREDICTIONS_CONFIG, or the platform configuration's predictions block), or make them equal")
    elif own is None and platform_block is not None:
        user, source = platform_block, "TRAINING_CONFIG.predictions"
    if user is None:
        source = "demo" if demo else "default"
    merged, _ = _merge(*([(DEMO_PREDICTIONS, "demo")] if demo else []), (user or {}, source))
    variable = "PREDICTIONS_CONFIG" if source != "TRAINING_CONFIG.predictions" else "TRAINING_CONFIG"
    try:
        return PredictionsConfig.model_validate(merged), source, variable
    except ValidationError as e:
        prefix = ("predictions",) if variable == "TRAINING_CONFIG" else ()
        _pydantic_problems(variable, PredictionsConfig, e, problems, lambda loc: ".".join((*prefix, *loc)))
        return None, source, variable


def _check_training(t: TrainingConfig, has_eval: bool, problems: _Problems, key) -> TrainingConfig:
    """Checks across keys; the default eval_strategy follows the data actually available."""
    var = "TRAINING_CONFIG"
    if t.eval_strategy is None:
        t = t.model_copy(update={"eval_strategy": "epoch" if has_eval else "no"})
    elif t.eval_strategy != "no" and not has_eval:
        problems.add(var, f'is "{t.eval_strategy}" but there is no evaluation data: set EVAL_DATASET_PATH or '
                     'TRAINING_CONFIG.eval_split, or set eval_strategy to "no"', key("eval_strategy"))
    if t.eval_strategy == "steps" and t.eval_steps is None:
        problems.add(var, 'eval_strategy "steps" needs eval_steps, a positive integer', key("eval_steps"))
    if t.dataloader_prefetch_factor is not None and t.dataloader_num_workers == 0:
        problems.add(var, "needs dataloader_num_workers > 0 (the workers prefetch)", key("dataloader_prefetch_factor"))
    if t.load_best_model_at_end:
        if t.eval_strategy == "no" or t.eval_strategy != t.save_strategy:
            problems.add(var, f"needs eval_strategy and save_strategy equal and not \"no\" (they are "
                         f'"{t.eval_strategy}" and "{t.save_strategy}")', key("load_best_model_at_end"))
        elif t.eval_strategy == "steps" and t.eval_steps and t.save_steps % t.eval_steps:
            problems.add(var, f"needs save_steps ({t.save_steps}) to be a multiple of eval_steps ({t.eval_steps})",
                         key("load_best_model_at_end"))
    if t.lr_scheduler_type == "reduce_lr_on_plateau" and t.eval_strategy == "no":
        problems.add(var, '"reduce_lr_on_plateau" needs evaluation (an eval_strategy other than "no")',
                     key("lr_scheduler_type"))
    needs = {"cosine_with_min_lr": ("min_lr", "min_lr_rate"), "cosine_warmup_with_min_lr": ("min_lr", "min_lr_rate"),
             "warmup_stable_decay": ("num_decay_steps",)}.get(t.lr_scheduler_type)
    if needs and not any(k in t.lr_scheduler_kwargs for k in needs):
        problems.add(var, f'"{t.lr_scheduler_type}" needs lr_scheduler_kwargs with {" or ".join(needs)}',
                     key("lr_scheduler_type"))
    for prefix, package in OPTIMIZER_PACKAGES.items():
        if t.optim.startswith(prefix) and importlib.util.find_spec(package) is None:
            problems.add(var, f'"{t.optim}" needs the package {package}, which this image does not install; '
                         "accepted: adamw_torch, adamw_torch_fused, adafactor, sgd, the bitsandbytes ones (paged_*, "
                         "*_8bit), …", key("optim"))
    if t.quantization.load_in_8bit and t.finetuning != "lora":
        problems.add(var, f'8-bit weights go with finetuning "lora" (it is "{t.finetuning}"; "qlora" is 4-bit)',
                     key("quantization"))
    if t.max_steps == 0:
        problems.add(var, "must be positive, or -1 to train for num_train_epochs", key("max_steps"))
    return t


def _check_predictions(p: PredictionsConfig, t: TrainingConfig | None, has_eval: bool, variable: str,
                       problems: _Problems) -> None:
    prefix = "predictions." if variable == "TRAINING_CONFIG" else ""
    v = p.validators
    if v.json_schema is not None and v.json_schema_path:
        problems.add(variable, "set json_schema (inline) or json_schema_path, not both", f"{prefix}validators")
    if isinstance(v.json_schema, str):
        try:
            schema = json.loads(v.json_schema)
        except json.JSONDecodeError as e:
            problems.add(variable, f"the inline schema is not valid JSON: {e}", f"{prefix}validators.json_schema")
        else:
            if not isinstance(schema, dict):
                problems.add(variable, f"must be a JSON schema object, got {type(schema).__name__}",
                             f"{prefix}validators.json_schema")
    if not p.enabled:
        return  # a disabled block is valid whatever else it says (the platform sends sample_count 0)
    if p.sample_count < 1:
        problems.add(variable, f"must be at least 1 when predictions are enabled (got {p.sample_count})",
                     f"{prefix}sample_count")
    if p.sample_frequency == "steps" and not (p.step_interval and p.step_interval > 0):
        problems.add(variable, f'must be a positive integer when sample_frequency is "steps" (got {p.step_interval!r})',
                     f"{prefix}step_interval")
    if t is not None and p.sample_frequency == "eval" and t.eval_strategy == "no":
        why = "evaluation is off" if has_eval else "there is no evaluation data"
        problems.add(variable, f'is "eval" but {why}: enable evaluation (EVAL_DATASET_PATH or '
                     'TRAINING_CONFIG.eval_split, with eval_strategy "steps" or "epoch") or choose "epoch"',
                     f"{prefix}sample_frequency")
    if p.samples_path:
        if not is_url(p.samples_path) and not Path(p.samples_path).is_absolute() and not Path(p.samples_path).exists():
            problems.add(variable, f"file not found: {p.samples_path!r}; a path in the platform's storage must reach "
                         "the pod as a signed https URL (or a file on the volume)", f"{prefix}samples_path")
        else:
            _check_path(variable, p.samples_path, problems, f"{prefix}samples_path")
    if v.json_schema_path:
        if not Path(v.json_schema_path).exists():
            _check_path(variable, v.json_schema_path, problems, f"{prefix}validators.json_schema_path")
        else:
            try:
                json.loads(Path(v.json_schema_path).read_text())
            except json.JSONDecodeError as e:
                problems.add(variable, f"the JSON schema file is malformed: {e}", f"{prefix}validators.json_schema_path")


def load_config() -> JobConfig:
    """Read and validate the whole environment. Raises ConfigError listing every problem found;
    loads nothing heavy. The one write: HF_HOME gets the image's default when it is empty."""
    problems = _Problems()
    try:
        env = Environment()
    except ValidationError as e:
        failed = {}
        for err in e.errors():
            problems.add(str(err["loc"][0]), f"{err['msg']} (got {err.get('input')!r})")
            failed[str(err["loc"][0])] = None
        env = Environment(**failed)  # the rest is still checked: every problem in one message

    # The model: MODEL_NAME, or the platform configuration's model.name (the demo's defaults
    # apply under the user's keys only when the model is the demo)
    model_name, platform_model = env.MODEL_NAME, _platform_model_name(env.TRAINING_CONFIG)
    if platform_model:
        if "MODEL_NAME" not in env.model_fields_set:
            model_name = platform_model
        elif platform_model != env.MODEL_NAME:
            problems.add("MODEL_NAME", f"{env.MODEL_NAME!r} differs from TRAINING_CONFIG.model.name "
                         f"{platform_model!r}: set one of them, or make them equal")
    demo = model_name == DEMO_MODEL
    training, shape, sources, mapped = _training_config(env, demo, problems)
    predictions, predictions_source, pred_variable = _predictions_config(
        env, demo, mapped.predictions if mapped else None, problems)

    # The data: DATASET_PATH, or DATASET_URL as the platform sends it
    dataset, eval_dataset = env.DATASET_PATH, env.EVAL_DATASET_PATH
    if env.DATASET_PATH and env.DATASET_URL and env.DATASET_PATH != env.DATASET_URL:
        problems.add("DATASET_URL", "differs from DATASET_PATH: they name the same thing (DATASET_URL is the "
                     "platform's name); set one of them")
    dataset = dataset or env.DATASET_URL
    if dataset is None:
        if not demo:
            problems.add("DATASET_PATH", "not set (nor DATASET_URL); a JSON / JSONL file or https URL of training rows")
        else:
            dataset, eval_dataset = str(TRAIN_FILE), eval_dataset or str(EVAL_FILE)
    if dataset:
        _check_path("DATASET_PATH" if env.DATASET_PATH else "DATASET_URL", dataset, problems)
    if eval_dataset:
        _check_path("EVAL_DATASET_PATH", eval_dataset, problems)

    has_eval = eval_dataset is not None or (training is not None and training.eval_split > 0)
    if training is not None:
        origin = mapped.origin if mapped else {}
        key = (lambda k: origin.get(k, k)) if shape == "platform" else (lambda k: k)
        training = _check_training(training, has_eval, problems, key)
    if predictions is not None:
        _check_predictions(predictions, training, has_eval, pred_variable, problems)
        try:
            _refuse_sharded(predictions)
        except ConfigError as e:  # reported with the others
            problems.extend(e.problems)

    from trainer.pod.platform import platform_calls  # here: lifecycle imports this module

    platform = None
    try:
        platform = platform_calls(env)
    except ConfigError as e:  # reported with the others
        problems.extend(e.problems)
    storage, reason = _storage_mode(env, problems)
    job_id, user_id = env.JOB_ID or "local", env.USER_ID
    if env.JOB_ID is not None and not env.JOB_ID.strip():
        problems.add("JOB_ID", "is blank; any non-empty text (the platform's job id)")
    if storage != "local":
        need = "database mode writes every prediction row with the job and its owner"
        if not env.JOB_ID:
            problems.add("JOB_ID", f"not set; {need}")
        user_id = _check_uuid("USER_ID", env.USER_ID, need, problems)

    output_dir, output_source = _image_default("OUTPUT_DIR", IMAGE_OUTPUT_DIR, "outputs")
    hf_home, _ = _image_default("HF_HOME", IMAGE_HF_HOME, None)
    if problems:
        raise ConfigError(problems)
    if hf_home and not os.environ.get("HF_HOME", "").strip():
        os.environ["HF_HOME"] = hf_home  # read by huggingface_hub in every training process

    return JobConfig(
        job_id=job_id,
        user_id=user_id,
        model_name=model_name,
        dataset_path=dataset,
        eval_dataset_path=eval_dataset,
        output_dir=Path(output_dir),
        training=training,
        predictions=predictions,
        storage=storage,
        storage_reason=reason,
        supabase_url=env.SUPABASE_URL,
        secrets=Secrets(env.SUPABASE_SERVICE_KEY, env.SUPABASE_ANON_KEY, env.SUPABASE_DB_URL,
                        env.JOB_TOKEN, env.INTERNAL_API_KEY, env.HF_TOKEN),
        num_processes=env.NUM_PROCESSES,
        env=env,
        config_shape=shape,
        training_sources=sources,
        predictions_source=predictions_source,
        notes=tuple(mapped.notes) if mapped else (),
        output_dir_source=output_source,
        platform=platform,
    )


def expected_rounds(cfg: JobConfig, train_rows: int | None, processes: int = 1) -> int | None:
    """How many prediction rounds the plan makes (None when the dataset size is not known yet)."""
    p, t = cfg.predictions, cfg.training
    if not p.enabled:
        return 0
    baseline = 1 if p.baseline else 0
    epochs = math.ceil(t.num_train_epochs)
    if p.sample_frequency == "epoch" and t.max_steps <= 0:
        return baseline + epochs
    if train_rows is None:
        return None
    per_epoch = math.ceil(math.ceil(train_rows / (t.per_device_train_batch_size * processes)) / t.gradient_accumulation_steps)
    total = t.max_steps if t.max_steps > 0 else math.ceil(per_epoch * t.num_train_epochs)
    if p.sample_frequency == "steps":
        return baseline + total // p.step_interval
    if p.sample_frequency == "epoch":
        return baseline + math.ceil(total / max(per_epoch, 1))
    if t.eval_strategy == "epoch":
        return baseline + epochs
    return baseline + total // (t.eval_steps or 1)
