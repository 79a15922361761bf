"""The job's configuration: every environment variable the image reads, parsed once, typed.

`load_config()` is the only place the environment is read. It returns a `JobConfig` or raises
`ConfigError` naming the variable, the key and what is accepted — before any model or dataset is
loaded. Secrets live in `Secrets` (pydantic SecretStr): they are never in reprs, argv,
TrainingArguments or logs; children of `accelerate launch` read them from the environment again.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.demo import DEMO_MODEL, EVAL_FILE, TRAIN_FILE
from trainer.fetch import is_url

#: Distinct exit codes (from sysexits.h) so the platform can tell why a pod stopped.
EXIT_CONFIG = 78  # EX_CONFIG: bad or incomplete configuration; the message names the fix
EXIT_PREFLIGHT = 77  # EX_NOPERM: the database refused (wrong key, table missing, no write)
EXIT_MIGRATION = 76  # EX_PROTOCOL: a migration failed to apply
MAX_SAMPLE_COUNT = 500  # a round generates for every sample: more would dominate training time


class ConfigError(Exception):
    """Bad input: `variable` (and `key` inside its JSON) and what is accepted."""

    def __init__(self, variable: str, message: str, key: str | None = None):
        self.variable, self.key = variable, key
        where = f"{variable}.{key}" if key else variable
        super().__init__(f"{where}: {message}")


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
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on a GPU that has it, fp32 on a CPU"
    )
    finetuning: Literal["full", "lora", "qlora"] = "full"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    merge_adapter: bool = Field(False, description="also save the adapter merged into the base model")


class ValidatorsConfig(_Strict):
    json_parse: bool = False
    json_schema_path: str | None = None


class PredictionsConfig(_Strict):
    """PREDICTIONS_CONFIG, in the platform's shape, plus generation and delivery settings."""

    enabled: bool = False
    sample_count: int = Field(10, ge=1, le=MAX_SAMPLE_COUNT)
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
    EVAL_DATASET_PATH: str | None = None
    OUTPUT_DIR: str = "outputs"
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
    "JOB_ID": ("the job; every prediction row carries it (a UUID in database mode)", "database", False),
    "USER_ID": ("the job's owner; only they can read its predictions (a UUID)", "database", False),
    "MODEL_NAME": (f'Hugging Face id or local path; "{DEMO_MODEL}" = the bundled demo model', "all", False),
    "DATASET_PATH": ("training data: JSON / JSONL file or https URL", "all (not the demo)", False),
    "EVAL_DATASET_PATH": ("evaluation data: JSON / JSONL file or https URL", "optional", False),
    "OUTPUT_DIR": ("checkpoints, final model, predictions.jsonl", "all", False),
    "TRAINING_CONFIG": ("JSON: epochs, learning rate, batch size, eval strategy, LoRA/QLoRA, …", "all", False),
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
    platform: Any = None  # trainer.lifecycle.PlatformCalls: which calls to the platform are on

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
        path = self.predictions.validators.json_schema_path
        return json.loads(Path(path).read_text()) if path else None


#: The demo's own defaults: apply only when the variable is not set.
DEMO_TRAINING = {
    "num_train_epochs": 8, "learning_rate": 2e-3, "per_device_train_batch_size": 32,
    "warmup_steps": 0.05, "logging_steps": 20, "save_strategy": "no", "seed": 0,
    "max_seq_length": 32, "eval_strategy": "epoch",
}
DEMO_PREDICTIONS = {
    "enabled": True, "sample_count": 24, "sample_frequency": "epoch", "baseline": True,
    "max_new_tokens": 8, "batch_size": 24,
}


def _parse_json_model(variable: str, raw: str | None, model: type[BaseModel], demo_default: dict | None):
    if raw is None or not raw.strip():
        return model.model_validate(demo_default or {})
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(variable, f"malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(variable, f"must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _config_error(variable, model, e) from None


def _config_error(variable: str, model: type[BaseModel], e: ValidationError) -> ConfigError:
    """The first error, phrased as `VARIABLE.key: what is wrong (got …)`."""
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or None
    if err["type"] == "extra_forbidden":
        for part in err["loc"][:-1]:  # the nested model the unknown key sits in
            model = model.model_fields[str(part)].default_factory  # type: ignore[assignment]
        accepted = ", ".join(model.model_fields)
        return ConfigError(variable, f"unknown key (a typo would be silently ignored); accepted: {accepted}", key)
    msg = err["msg"]
    if "input" in err and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return ConfigError(variable, msg, key)


def _check_path(variable: str, path: str, key: str | None = None) -> None:
    if not is_url(path) and not Path(path).exists():
        raise ConfigError(variable, f"file not found: {path!r} (a JSON / JSONL file or an https URL)", key)


def _storage_mode(env: Environment) -> tuple[StorageMode, str]:
    """Derive the storage mode from what is set; a half-configured database mode is an error."""
    url, key, anon, db = env.SUPABASE_URL, env.SUPABASE_SERVICE_KEY, env.SUPABASE_ANON_KEY, env.SUPABASE_DB_URL
    if url and key:
        return "supabase", "SUPABASE_URL and SUPABASE_SERVICE_KEY are set"
    if url or key or anon:
        if anon and not key:
            raise ConfigError(
                "SUPABASE_SERVICE_KEY",
                "not set, but SUPABASE_ANON_KEY is: the anon key cannot insert under RLS; set SUPABASE_SERVICE_KEY "
                "(Project Settings → API → service_role)",
            )
        missing = [n for n, v in (("SUPABASE_URL", url), ("SUPABASE_SERVICE_KEY", key)) if not v]
        raise ConfigError(
            missing[0],
            f"database mode is half-configured: missing {', '.join(missing)} "
            "(set both to write predictions to Supabase, or neither to keep them locally)",
        )
    if db:
        return "postgres", "SUPABASE_DB_URL is set and SUPABASE_URL is not: direct Postgres writer"
    return "local", "SUPABASE_URL is not set"


def _refuse_sharded(predictions: PredictionsConfig) -> None:
    """Under FSDP / DeepSpeed ZeRO-3 no single rank holds the whole model, so the main process
    cannot generate alone (it would hang in the shards' all-gathers). Refused up front."""
    for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        if predictions.enabled and os.environ.get(name, "").lower() in ("1", "true", "yes"):
            raise ConfigError(
                name, "sharded training with predictions is not supported: a single rank cannot generate from a "
                "sharded model. Unset it (DDP: every GPU keeps a full copy) or set PREDICTIONS_CONFIG.enabled to false",
            )


def _require_uuid(variable: str, value: str | None, why: str) -> str:
    if not value:
        raise ConfigError(variable, f"not set; {why}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ConfigError(variable, f"must be a UUID, got {value!r}") from None


def load_config() -> JobConfig:
    """Read and validate the whole environment. Raises ConfigError; loads nothing heavy."""
    try:
        env = Environment()
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(str(err["loc"][0]), f"{err['msg']} (got {err.get('input')!r})") from None

    demo = env.MODEL_NAME == DEMO_MODEL
    training = _parse_json_model("TRAINING_CONFIG", env.TRAINING_CONFIG, TrainingConfig, DEMO_TRAINING if demo else None)
    predictions = _parse_json_model(
        "PREDICTIONS_CONFIG", env.PREDICTIONS_CONFIG, PredictionsConfig, DEMO_PREDICTIONS if demo else None
    )

    dataset, eval_dataset = env.DATASET_PATH, env.EVAL_DATASET_PATH
    if dataset is None:
        if not demo:
            raise ConfigError("DATASET_PATH", "not set; a JSON / JSONL file or https URL of training rows")
        dataset, eval_dataset = str(TRAIN_FILE), eval_dataset or str(EVAL_FILE)
    _check_path("DATASET_PATH", dataset)
    if eval_dataset:
        _check_path("EVAL_DATASET_PATH", eval_dataset)

    if training.eval_strategy == "steps" and training.eval_steps is None:
        raise ConfigError("TRAINING_CONFIG", 'eval_strategy "steps" needs eval_steps, a positive integer', "eval_steps")
    if predictions.sample_frequency == "steps" and not (predictions.step_interval and predictions.step_interval > 0):
        raise ConfigError(
            "PREDICTIONS_CONFIG", f'must be a positive integer when sample_frequency is "steps" '
            f"(got {predictions.step_interval!r})", "step_interval",
        )

    has_eval = eval_dataset is not None or training.eval_split > 0
    if training.eval_strategy is None:
        training = training.model_copy(update={"eval_strategy": "epoch" if has_eval else "no"})
    elif training.eval_strategy != "no" and not has_eval:
        raise ConfigError(
            "TRAINING_CONFIG", f'is "{training.eval_strategy}" but there is no evaluation data: '
            'set EVAL_DATASET_PATH or TRAINING_CONFIG.eval_split, or set eval_strategy to "no"', "eval_strategy",
        )

    if predictions.enabled:
        if predictions.sample_frequency == "eval" and training.eval_strategy == "no":
            why = "evaluation is off" if has_eval else "there is no evaluation data"
            raise ConfigError(
                "PREDICTIONS_CONFIG", f'is "eval" but {why}: enable evaluation (EVAL_DATASET_PATH or '
                'TRAINING_CONFIG.eval_split, with eval_strategy "steps" or "epoch") or choose "epoch"',
                "sample_frequency",
            )
        if predictions.samples_path:
            _check_path("PREDICTIONS_CONFIG", predictions.samples_path, "samples_path")
        schema_path = predictions.validators.json_schema_path
        if schema_path:
            _check_path("PREDICTIONS_CONFIG", schema_path, "validators.json_schema_path")
            try:
                json.loads(Path(schema_path).read_text())
            except json.JSONDecodeError as e:
                raise ConfigError("PREDICTIONS_CONFIG", f"the JSON schema file is malformed: {e}",
                                  "validators.json_schema_path") from None

    _refuse_sharded(predictions)
    from trainer.lifecycle import platform_calls  # here: lifecycle imports this module

    platform = platform_calls(env)
    storage, reason = _storage_mode(env)
    job_id, user_id = env.JOB_ID or "local", env.USER_ID
    if storage != "local":
        need = "database mode writes every prediction row with the job and its owner"
        job_id = _require_uuid("JOB_ID", env.JOB_ID, need)
        user_id = _require_uuid("USER_ID", env.USER_ID, need)

    return JobConfig(
        job_id=job_id,
        user_id=user_id,
        model_name=env.MODEL_NAME,
        dataset_path=dataset,
        eval_dataset_path=eval_dataset,
        output_dir=Path(env.OUTPUT_DIR),
        training=training,
        predictions=predictions,
        storage=storage,
        storage_reason=reason,
        supabase_url=env.SUPABASE_URL,
        secrets=Secrets(env.SUPABASE_SERVICE_KEY, env.SUPABASE_ANON_KEY, env.SUPABASE_DB_URL,
                        env.JOB_TOKEN, env.INTERNAL_API_KEY, env.HF_TOKEN),
        num_processes=env.NUM_PROCESSES,
        env=env,
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
