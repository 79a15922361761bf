"""The startup report: every variable (set / missing / default, which mode needs it; secrets as
their length and role, never their value), then one line per decision that follows."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from predictions.store.keys import key_role
from trainer.config.environment import VARIABLES
from trainer.config.job import JobConfig, best_model_line, expected_rounds
from trainer.data import holdout_size
from trainer.datacheck import user_data
from trainer.fetch import is_url
from trainer.model import resolve_optim
from trainer.pod.cluster import Cluster
from trainer.redact import redact_url

SHOW_CHARS = 70  # longer values are cut in the table: the JSON variables can be long


def _describe_secret(name: str, value: str) -> str:
    desc = f"set ({len(value)} chars"
    if name.startswith("SUPABASE_") and name.endswith("_KEY"):  # INTERNAL_API_KEY is no JWT
        desc += f", role={key_role(value) or 'unreadable'}"
    return desc + ")"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


def _json_keys(raw: str) -> str:
    """A JSON variable by its keys, never its text (a signed samples_path must not print)."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return "set (not valid JSON)"
    if not isinstance(data, dict):
        return f"set ({type(data).__name__})"
    return "keys: " + ", ".join(data)


def _describe(name: str, cfg: JobConfig) -> tuple[str, str]:
    """(status, shown value) for one variable."""
    raw = getattr(cfg.env, name)
    secret = VARIABLES[name][2]
    if name == "OUTPUT_DIR" and raw is None:
        return "default", f"{cfg.output_dir} ({cfg.output_dir_source})"
    if raw is None:
        path = cfg.dataset_path if name == "DATASET_PATH" else cfg.eval_dataset_path
        if name in ("DATASET_PATH", "EVAL_DATASET_PATH") and cfg.is_demo and path and cfg.env.DATASET_URL is None:
            return "default", f"bundled demo data ({Path(path).name})"
        if name == "TRAINING_CONFIG":
            return "default", "the demo's defaults" if cfg.is_demo else "every key at its default"
        if name == "PREDICTIONS_CONFIG":
            if cfg.predictions_source == "TRAINING_CONFIG.predictions":
                return "default", "from TRAINING_CONFIG.predictions"
            return "default", "the demo's defaults" if cfg.is_demo else "every key at its default"
        if name == "JOB_ID":
            return "default", cfg.job_id
        if name == "MODEL_NAME" and cfg.model_name != cfg.env.MODEL_NAME:
            return "default", f"{cfg.model_name} (TRAINING_CONFIG.model.name)"
        return "missing", ""
    if secret:
        return "set", _describe_secret(name, raw.get_secret_value())
    value = str(raw)
    if name == "TRAINING_CONFIG":
        shape = "the platform's nested job configuration" if cfg.config_shape == "platform" else "flat"
        return "set", f"{shape}; {_json_keys(value)}"
    if name == "PREDICTIONS_CONFIG":
        return "set", _json_keys(value)
    if is_url(value.strip()):  # every URL: its userinfo and query string may be credentials
        shown = redact_url(value.strip())
        hidden = [what for what, there in (("userinfo", "@" in value.split("://", 1)[1].split("/", 1)[0]),
                                           ("query", "?" in value)) if there]
        value = shown + (f" ({' and '.join(hidden)} hidden)" if hidden else "")
    if name in ("MODEL_NAME", "OUTPUT_DIR", "FRESH_RUN") and name not in cfg.env.model_fields_set:
        return "default", value
    return "set", value if len(value) <= SHOW_CHARS else value[: SHOW_CHARS - 1] + "…"


def _mount_point(path: Path) -> str:
    """The mount point `path` lies under (the longest one that contains it)."""
    target, best = str(path.resolve()), "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        point = line.split()[4].replace("\\040", " ")
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best = point
    return best


def output_line(cfg: JobConfig) -> str:
    """Where outputs go; a warning when, in a container, that is not on a mounted volume."""
    point = _mount_point(cfg.output_dir)
    line = f"outputs: {cfg.output_dir.resolve()} ({cfg.output_dir_source}; mount {point})"
    in_container = Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
    if point == "/" and in_container:
        line += (" — WARNING: not on a mounted volume: checkpoints, the model and predictions.jsonl are lost with the "
                 "container, and a restart cannot resume (mount one, e.g. -v /data/workspace:/workspace)")
    hf_home = os.environ.get("HF_HOME")
    return line + (f"; model cache HF_HOME={hf_home}" if hf_home else "")


def settings_lines(cfg: JobConfig, processes: int, precision: str, optim: str, optim_note: str | None) -> list[str]:
    """The effective training and generation settings, and where each came from."""
    t, src = cfg.training, cfg.training_sources or {}

    def where(*keys: str) -> str:
        """The sources of `keys`: "demo / default", or "platform config (training.a, training.b)"."""
        found, platform = [], []
        for k in keys:
            source = src.get(k, "default")
            if source.startswith("platform config ("):
                platform.append(source[len("platform config ("):-1])
            elif source not in found:
                found.append(source)
        if platform:
            found.append(f"platform config ({', '.join(dict.fromkeys(platform))})")
        return " / ".join(sorted(found))

    lines = ["settings (value — where it came from):"]
    trained_as = {"sft": "TRL SFTTrainer", "dpo": "TRL DPOTrainer", "orpo": "TRL ORPOTrainer (experimental)",
                  "kto": f"TRL KTOTrainer, desirable when reward >= {t.reward_threshold:g}", "cpt": "TRL SFTTrainer on raw text"}
    extras = [f"beta {t.beta:g}"] if t.method in ("dpo", "orpo", "kto") else ["packed"] if t.packing else []
    lines.append(f"  method: {t.method} ({trained_as[t.method]}{''.join(', ' + e for e in extras)}) — "
                 f"{where('method', 'packing', 'beta', 'reward_threshold')}")
    if t.max_steps > 0:
        lines.append(f"  length: {t.max_steps} steps — {where('max_steps')}")
    else:
        lines.append(f"  length: {t.num_train_epochs:g} epochs — {where('num_train_epochs')}")
    lines.append(f"  learning rate: {t.learning_rate:g} — {where('learning_rate')}")
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * processes
    lines.append(f"  batch: {t.per_device_train_batch_size} per process × {t.gradient_accumulation_steps} accumulation × "
                 f"{_plural(processes, 'process', 'processes')} = {per_step} rows per step — "
                 f"{where('per_device_train_batch_size', 'gradient_accumulation_steps')}")
    warmup = f", warmup {t.warmup_steps:g}" + (" of all steps" if 0 < t.warmup_steps < 1 else " steps")
    lines.append(f"  scheduler: {t.lr_scheduler_type}{warmup if t.warmup_steps else ''} — "
                 f"{where('lr_scheduler_type', 'warmup_steps')}")
    lines.append(f"  optimizer: {optim} — {where('optim')}" + (f" ({optim_note})" if optim_note else ""))
    prec = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[precision]
    asked = t.mixed_precision
    lines.append(f"  precision: {prec} — {where('mixed_precision')}"
                 + (f" (asked {asked}; a CPU trains in fp32)" if asked not in ("auto", "no") and precision == "no" else ""))
    lines.append(f"  fine-tuning: {t.finetuning}" + (f", {t.quant_bits}-bit weights" if t.quant_bits else "")
                 + (f", LoRA r={t.lora.r} alpha={t.lora.alpha}" if t.finetuning != "full" else "")
                 + f" — {where('finetuning', *(('lora', 'quantization') if t.finetuning != 'full' else ()))}")
    if "eval_strategy" in src:
        ev = f"{t.eval_strategy} — {src['eval_strategy']}"
    else:
        ev = f"{t.eval_strategy} — follows the data ({'evaluation data present' if cfg.has_eval else 'no evaluation data'})"
    lines.append(f"  evaluation: {ev}" + (f", every {t.eval_steps} steps" if t.eval_strategy == "steps" else ""))
    lines.append(f"  max sequence length: {t.max_seq_length} tokens — {where('max_seq_length')}")
    lines.append(f"  trust_remote_code: {str(t.trust_remote_code).lower()} — {where('trust_remote_code')}"
                 + (" (the model repository's own code runs)" if t.trust_remote_code else ""))
    p = cfg.predictions
    if p.enabled:
        freq = {"eval": "after each evaluation", "epoch": "at each epoch end",
                "steps": f"every {p.step_interval} steps"}[p.sample_frequency]
        lines.append(f"  predictions: {_plural(p.sample_count, 'sample')}, {freq}, max_new_tokens {p.max_new_tokens} — "
                     f"{cfg.predictions_source}")
    else:
        lines.append(f"  predictions: off — {cfg.predictions_source}")
    return lines


def _validators(v) -> str:
    parts = ["json_parse"] if v.json_parse else []
    if v.json_schema is not None:
        parts.append("json_schema (inline)")
    elif v.json_schema_path:
        parts.append(f"json_schema ({Path(v.json_schema_path).name})")
    return f", validators: {', '.join(parts)}" if parts else ""


def count_rows(path: str) -> int | None:
    """Rows of a local JSONL file (a cheap line count), None when not known before loading."""
    if is_url(path) or not path.endswith(".jsonl"):
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def decisions(cfg: JobConfig, processes: int, device: str, precision: str) -> list[str]:
    """One line per decision, in plain words."""
    lines = []
    trained_on = "your data" if user_data(cfg) else "the bundled data"
    model = ("the bundled demo: a small Llama built from a config with fresh weights, tokenizer trained on "
             f"{trained_on}" if cfg.is_demo else cfg.model_name)
    lines.append(f"model: {model}; fine-tuning: {cfg.training.finetuning}")
    shape = {"platform": "the platform's nested job configuration (mapped onto this image's keys)",
             "flat": "this image's flat keys", "none": "not set"}[cfg.config_shape]
    lines.append(f"TRAINING_CONFIG: {shape}")
    for note in cfg.notes:
        lines.append(f"platform config: {note}")
    lines.append(output_line(cfg))
    lines.append(best_model_line(cfg))
    prec = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}[precision]
    lines.append(f"processes: {processes} on {device}; precision {prec}"
                 + (" (a CPU trains in fp32)" if device == "cpu" else ""))
    if cfg.storage == "local":
        lines.append(f"predictions storage: kept locally only — {cfg.storage_reason}")
    elif cfg.storage == "supabase":
        lines.append(f"predictions storage: Supabase API at {redact_url(cfg.supabase_url)} with the service_role key "
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
        lines.append(f"predictions: disabled ({cfg.predictions_source}: enabled is false): no rounds, no callback")
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
                 + _validators(p.validators))
    if n:
        batches = math.ceil(p.sample_count / p.batch_size)
        lines.append(f"prediction cost: at most {n * batches * p.max_new_tokens:,} decoding steps in all "
                     f"({_plural(n, 'round')} × {_plural(batches, 'batch', 'batches')} × "
                     f"{_plural(p.max_new_tokens, 'token')}); the first "
                     "round's measured time gives the projected total in seconds")
    return lines


def print_report(cfg: JobConfig, processes: int, device: str, precision: str, console: Console | None = None,
                 launch: list[str] | tuple[str, ...] = (), cluster: Cluster | None = None) -> None:
    """Print the variable table and the decisions; `launch`: what a platform launch took from its
    script and what it ignored (trainer/config/bootstrap.py); `cluster`: this node's role in it."""
    console = console or Console(width=160, soft_wrap=True)
    table = Table(title="configuration", title_justify="left")
    for col in ("variable", "status", "value", "needed by"):
        table.add_column(col, overflow="fold")
    for name, (_what, mode, _secret) in VARIABLES.items():  # what each is for: README, .env.example
        status, value = _describe(name, cfg)
        table.add_row(name, status, value, mode)
    console.print(table)
    for line in [*launch, *decisions(cfg, processes, device, precision)]:
        console.print(line, highlight=False)
    if cluster is not None:
        console.print(cluster.describe(processes), highlight=False)
    for line in settings_lines(cfg, processes, precision, *resolve_optim(cfg.training)):
        console.print(line, highlight=False)
