"""The startup report: every variable (set / missing / default, which mode needs it; secrets as
their length and role, never their value), then one line per decision that follows."""

from __future__ import annotations

import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from predictions.keys import key_role
from trainer.config import VARIABLES, JobConfig, expected_rounds
from trainer.data import holdout_size
from trainer.fetch import is_url, public_name

SHOW_CHARS = 70  # longer values are cut in the table: the JSON variables can be long


def _describe_secret(name: str, value: str) -> str:
    desc = f"set ({len(value)} chars"
    if name.startswith("SUPABASE_") and name.endswith("_KEY"):  # INTERNAL_API_KEY is no JWT
        desc += f", role={key_role(value) or 'unreadable'}"
    return desc + ")"


def _describe(name: str, cfg: JobConfig) -> tuple[str, str]:
    """(status, shown value) for one variable."""
    raw = getattr(cfg.env, name)
    secret = VARIABLES[name][2]
    if raw is None:
        path = cfg.dataset_path if name == "DATASET_PATH" else cfg.eval_dataset_path
        if name in ("DATASET_PATH", "EVAL_DATASET_PATH") and cfg.is_demo and path:
            return "default", f"bundled demo data ({Path(path).name})"
        if name in ("TRAINING_CONFIG", "PREDICTIONS_CONFIG"):
            return "default", "the demo's defaults" if cfg.is_demo else "every key at its default"
        if name == "JOB_ID":
            return "default", cfg.job_id
        return "missing", ""
    if secret:
        return "set", _describe_secret(name, raw.get_secret_value())
    value = str(raw)
    if name in ("DATASET_PATH", "EVAL_DATASET_PATH") and is_url(value):
        value = public_name(value) + " (query hidden)"
    if name in ("MODEL_NAME", "OUTPUT_DIR", "FRESH_RUN") and name not in cfg.env.model_fields_set:
        return "default", value
    return "set", value if len(value) <= SHOW_CHARS else value[: SHOW_CHARS - 1] + "…"


def count_rows(path: str) -> int | None:
    """Rows of a local JSONL file (a cheap line count), None when not known before loading."""
    if is_url(path) or not path.endswith(".jsonl"):
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def decisions(cfg: JobConfig, processes: int, device: str, precision: str) -> list[str]:
    """One line per decision, in plain words."""
    lines = []
    model = ("the bundled demo: a small Llama built from a config with fresh weights, tokenizer trained on "
             "the bundled data" if cfg.is_demo else cfg.model_name)
    lines.append(f"model: {model}; fine-tuning: {cfg.training.finetuning}")
    prec = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[precision]
    lines.append(f"processes: {processes} on {device}; precision {prec}"
                 + (" (a CPU trains in fp32)" if device == "cpu" else ""))
    if cfg.storage == "local":
        lines.append(f"predictions storage: kept locally only — {cfg.storage_reason}")
    elif cfg.storage == "supabase":
        lines.append(f"predictions storage: Supabase API at {cfg.supabase_url} with the service_role key "
                     f"({cfg.storage_reason}); local spool {cfg.predictions_path}")
    else:
        lines.append(f"predictions storage: Postgres, directly ({cfg.storage_reason}); local spool {cfg.predictions_path}")
    if cfg.secrets.supabase_db_url is not None:
        lines.append("migrations: applied through SUPABASE_DB_URL before training, if any is pending")
    elif cfg.storage == "supabase":
        lines.append("migrations: skipped — SUPABASE_DB_URL is not set; the table is verified through the API")
    else:
        lines.append("migrations: skipped — no database configured")
    p = cfg.predictions
    if not p.enabled:
        lines.append("predictions: disabled (PREDICTIONS_CONFIG.enabled is false): no rounds, no callback")
        return lines
    rows = count_rows(cfg.dataset_path)
    if rows is not None and cfg.eval_dataset_path is None and cfg.training.eval_split > 0:
        rows -= holdout_size(rows, cfg.training.eval_split)
    n = expected_rounds(cfg, rows, processes)
    when = {"eval": f"after each evaluation ({cfg.training.eval_strategy})", "epoch": "at each epoch end",
            "steps": f"every {p.step_interval} steps"}[p.sample_frequency]
    source = "samples_path" if p.samples_path else ("evaluation data" if cfg.has_eval else "training data")
    gen = "greedy" if not p.do_sample else f"sampling (temperature={p.temperature}, top_p={p.top_p}, seed={p.seed})"
    lines.append(f"predictions: {p.sample_count} samples from the {source}, {when}"
                 + (", plus a baseline round before training" if p.baseline else "")
                 + f"; {n if n is not None else 'an unknown number of'} rounds expected")
    lines.append(f"generation: {gen}, max_new_tokens={p.max_new_tokens}, {p.batch_size} prompts per batch"
                 + (f", validators: {p.validators.model_dump(exclude_defaults=True)}" if p.validators.json_parse
                    or p.validators.json_schema_path else ""))
    if n:
        batches = math.ceil(p.sample_count / p.batch_size)
        lines.append(f"prediction cost: at most {n * batches * p.max_new_tokens:,} decoding steps in all ({n} rounds × "
                     f"{batches} batches × {p.max_new_tokens} tokens); the first "
                     "round's measured time gives the projected total in seconds")
    return lines


def print_report(cfg: JobConfig, processes: int, device: str, precision: str, console: Console | None = None) -> None:
    """Print the variable table and the decisions."""
    console = console or Console(width=160, soft_wrap=True)
    table = Table(title="configuration", title_justify="left")
    for col in ("variable", "status", "value", "needed by"):
        table.add_column(col, overflow="fold")
    for name, (_what, mode, _secret) in VARIABLES.items():  # what each is for: README, .env.example
        status, value = _describe(name, cfg)
        table.add_row(name, status, value, mode)
    console.print(table)
    for line in decisions(cfg, processes, device, precision):
        console.print(line, highlight=False)
