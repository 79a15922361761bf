"""Checks across keys and variables, once each field is valid on its own: what the schema alone
cannot say (evaluation data for an eval strategy, a half-configured database mode, a sharding
strategy that cannot generate). Each adds to the problems; `load_config` raises them together."""

from __future__ import annotations

import importlib.util
import json
import os
import uuid
from pathlib import Path

from trainer.config.environment import Environment
from trainer.config.errors import ConfigError, Problems
from trainer.config.job import StorageMode
from trainer.config.schema import OPTIMIZER_PACKAGES, PredictionsConfig, TrainingConfig
from trainer.fetch import is_url


def check_path(variable: str, path: str, problems: Problems, key: str | None = None) -> None:
    if not is_url(path) and not Path(path).exists():
        problems.add(variable, f"file not found: {path!r} (a JSON / JSONL file or an https URL)", key)


def storage_mode(env: Environment, problems: Problems) -> tuple[StorageMode, str]:
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


def refuse_sharded(predictions: PredictionsConfig) -> None:
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


def check_uuid(variable: str, value: str | None, why: str, problems: Problems) -> str | None:
    if not value:
        problems.add(variable, f"not set; {why}")
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        problems.add(variable, f"must be a UUID (the platform's auth user id), got {value!r}")
        return None


def check_training(t: TrainingConfig, has_eval: bool, problems: Problems, key) -> TrainingConfig:
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
    if t.method == "kto" and t.per_device_train_batch_size < 2:
        problems.add(var, "must be at least 2 for kto (the platform's rlhf): its KL estimate pairs each row with "
                     "another row of the same batch", key("per_device_train_batch_size"))
    if t.packing and t.method not in ("sft", "cpt"):
        problems.add(var, f"packs sft and cpt rows only; {t.method} trains on whole pairs: set it to false",
                     key("packing"))
    return t


def check_predictions(p: PredictionsConfig, t: TrainingConfig | None, has_eval: bool, variable: str,
                       problems: Problems) -> None:
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
            check_path(variable, p.samples_path, problems, f"{prefix}samples_path")
    if v.json_schema_path:
        if not Path(v.json_schema_path).exists():
            check_path(variable, v.json_schema_path, problems, f"{prefix}validators.json_schema_path")
        else:
            try:
                json.loads(Path(v.json_schema_path).read_text())
            except json.JSONDecodeError as e:
                problems.add(variable, f"the JSON schema file is malformed: {e}", f"{prefix}validators.json_schema_path")
