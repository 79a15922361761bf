"""`JobConfig`: everything a run needs, validated once by `load_config` and passed down; and the
plan it implies (how many prediction rounds)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trainer.config.calls import PlatformCalls
from trainer.config.environment import Environment, Secrets
from trainer.config.schema import PredictionsConfig, TrainingConfig
from trainer.demo import DEMO_MODEL

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
    platform: PlatformCalls | None = None  # which calls to the platform are on

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


def best_model(cfg: JobConfig) -> dict[str, Any]:
    """The checkpoint settings of TrainingArguments. A job in the platform's shape keeps the best
    evaluation checkpoint whenever evaluation is on, as the platform's trainer does
    (standalone_trainer.py: load_best_model_at_end on eval_loss, save_steps rounded down to a
    multiple of eval_steps, at least eval_steps), unless its configuration says
    load_best_model_at_end itself; saves then follow the evaluations. Otherwise the keys as set."""
    t = cfg.training
    settings = {"save_strategy": t.save_strategy, "save_steps": t.save_steps,
                "load_best_model_at_end": t.load_best_model_at_end, "metric_for_best_model": t.metric_for_best_model}
    explicit = "load_best_model_at_end" in (cfg.training_sources or {})
    if cfg.config_shape != "platform" or explicit or t.eval_strategy in (None, "no"):
        return settings
    save_steps = t.save_steps
    if t.eval_strategy == "steps" and t.eval_steps and save_steps % t.eval_steps:
        save_steps = max(t.eval_steps, save_steps // t.eval_steps * t.eval_steps)
    return {"save_strategy": t.eval_strategy, "save_steps": save_steps, "load_best_model_at_end": True,
            "metric_for_best_model": t.metric_for_best_model or "eval_loss"}


def best_model_line(cfg: JobConfig) -> str:
    """The startup report's line on which model final/ holds."""
    b = best_model(cfg)
    if not b["load_best_model_at_end"]:
        return "final model: the last step's (load_best_model_at_end is off)"
    why = ("load_best_model_at_end is set" if "load_best_model_at_end" in (cfg.training_sources or {})
           else "as the platform's trainer does whenever evaluation is on")
    saves = (f"saves every {b['save_steps']} steps" if b["save_strategy"] == "steps" else "saves at each epoch end")
    return (f"final model: the best evaluation checkpoint by {b['metric_for_best_model']}, loaded at the end ({why}; "
            f"{saves}, with the evaluations)")
