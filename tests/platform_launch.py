"""The platform's pod request, built as its deploy route builds it (app/api/training/deploy/runpod/
route.ts → lib/training/providers/runpod-provider.ts → lib/training/script-builder.ts →
lib/training/runpod-service.ts `createPod`): the container's arguments (dockerArgs) and its
environment, TRAINING_SCRIPT_B64 included. Ported line by line from those files; where this
differs from them, the comment says why.

`generate_training_config` is ScriptBuilder.generateTrainingConfig (JavaScript's `||` and
`!== false` defaults, keys whose value is undefined left out as JSON.stringify does);
`runpod_script` is ScriptBuilder.generateRunPodScript. As deployed, that template escapes three
of its interpolations (`\\${configBase64}`, `\\${trainerScriptBase64}`, `\\${jobId}`): the script
holds the literal text `${configBase64}`, not the configuration. `as_deployed=False` builds it
as the template's comments intend (the configuration and the trainer embedded).
"""

from __future__ import annotations

import base64
import gzip
import json
import shlex
from pathlib import Path
from typing import Any

import httpx

from tests.http_servers import LoopbackServer
from tests.postgrest_double import PostgrestDouble, serve
from trainer.demo import TRAIN_FILE

#: runpod-service.ts createPod: the dockerArgs of every pod.
DOCKER_ARGS = ("bash -c 'echo \"$TRAINING_SCRIPT_B64\" | base64 -d > /workspace/run_training.sh && "
               "chmod +x /workspace/run_training.sh && /workspace/run_training.sh'")
#: The container's arguments as RunPod passes dockerArgs to an image with an ENTRYPOINT.
ARGV = shlex.split(DOCKER_ARGS)
#: runpod-provider.ts: "the dataset is always downloaded to this location by the bash script".
POD_DATASET_PATH = "/workspace/dataset.jsonl"
#: Stands in for lib/training/standalone_trainer.py (179 KB in the platform's repository; embedded,
#: it would make TRAINING_SCRIPT_B64 about 318 KB, more than Linux lets one environment string be).
STAND_IN_TRAINER = "# standalone_trainer.py: a stand-in for the platform's trainer (never run here)\n"

_UNDEFINED = object()


def _truthy(v: Any) -> bool:  # JavaScript's truthiness
    return v is not _UNDEFINED and v is not None and v is not False and v != 0 and v != ""


def _or(v: Any, default: Any) -> Any:
    return v if _truthy(v) else default


def _get(block: dict | None, key: str) -> Any:
    return (block or {}).get(key, _UNDEFINED)


def _drop_undefined(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_undefined(v) for k, v in value.items() if v is not _UNDEFINED}
    return value


def generate_training_config(model_name: str, dataset_path: str, config: dict) -> dict:
    """ScriptBuilder.generateTrainingConfig: the config.json its trainer reads."""
    training, data, model = config.get("training") or {}, config.get("data"), config.get("model") or {}
    tokenizer, lora = config.get("tokenizer"), training.get("lora_config")
    g = lambda key: _get(training, key)  # noqa: E731
    return _drop_undefined({
        "model": {
            "name": model_name,
            "trust_remote_code": _or(_get(model, "trust_remote_code"), False),
            "torch_dtype": _or(_get(model, "torch_dtype"), "float16"),
            "device_map": _or(_get(model, "device_map"), "auto"),
        },
        "tokenizer": {
            "name": _or(_get(tokenizer, "name"), model_name),
            "trust_remote_code": _or(_get(tokenizer, "trust_remote_code"), _or(_get(model, "trust_remote_code"), False)),
            "padding_side": _get(tokenizer, "padding_side"),
            "add_eos_token": _get(tokenizer, "add_eos_token"),
        },
        "training": {
            "method": _or(g("method"), "sft"),
            "use_lora": g("use_lora") is not False,
            "num_epochs": _or(g("num_epochs"), 3),
            "batch_size": _or(g("batch_size"), 4),
            "learning_rate": _or(g("learning_rate"), 0.0002),
            "lr_scheduler_type": _or(g("lr_scheduler_type"), "cosine"),
            "warmup_ratio": g("warmup_ratio"),
            "warmup_steps": _or(g("warmup_steps"), 100),
            "save_steps": _or(g("save_steps"), 500),
            "save_total_limit": _or(g("save_total_limit"), 3),
            "evaluation_strategy": _or(g("evaluation_strategy"), "steps"),
            "eval_steps": _or(g("eval_steps"), 500),
            "eval_batch_size": _or(g("eval_batch_size"), _or(g("batch_size"), 4)),
            "packing": _or(g("packing"), False),
            "gradient_accumulation_steps": _or(g("gradient_accumulation_steps"), 1),
            "logging_steps": _or(g("logging_steps"), 10),
            "bf16": g("bf16") is not False,
            "fp16": _or(g("fp16"), False),
            "optim": _or(g("optim"), "paged_adamw_8bit"),
            "max_grad_norm": _or(g("max_grad_norm"), 1.0),
            "weight_decay": _or(g("weight_decay"), 0.01),
            "gradient_checkpointing": g("gradient_checkpointing") is not False,
            "dataloader_num_workers": _or(g("dataloader_num_workers"), 4),
            "dataloader_prefetch_factor": _or(g("dataloader_prefetch_factor"), 2),
            "dataloader_pin_memory": g("dataloader_pin_memory") is not False,
            "group_by_length": _or(g("group_by_length"), False),
            "max_length": _or(g("max_length"), 512),
            "quantization": _or(g("quantization"), {}),
        },
        "lora": {
            "r": _or(_get(lora, "r"), 16),
            "alpha": _or(_get(lora, "lora_alpha"), 32),
            "dropout": _or(_get(lora, "lora_dropout"), 0.05),
            "target_modules": _or(_get(lora, "target_modules"), None),
            "bias": _or(_get(lora, "bias"), "none"),
            "task_type": _or(_get(lora, "task_type"), "CAUSAL_LM"),
        },
        "data": {
            "strategy": _or(_get(data, "strategy"), "standard"),
            "generation_type": _or(_get(data, "generation_type"), "real"),
            "max_samples": _get(data, "max_samples"),
            "train_split": _or(_get(data, "train_split"), 0.8),
            "eval_split": _or(_get(data, "eval_split"), 0.2),
            "dataset_format": _get(data, "dataset_format"),
        },
        "dataset_path": dataset_path,
        "output_dir": "/workspace/fine_tuned_model",
    })


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def runpod_script(config: dict, hf_token: str, wandb_key: str | None, job_id: str, *, as_deployed: bool = True,
                  trainer: str = STAND_IN_TRAINER) -> str:
    """ScriptBuilder.generateRunPodScript (JSON.stringify(config, null, 2), Buffer base64)."""
    config_b64 = _b64(json.dumps(config, indent=2, ensure_ascii=False))
    replace = {
        "@@HF_TOKEN@@": hf_token, "@@JOB_ID@@": job_id,
        "@@WANDB_LINE@@": f'export WANDB_API_KEY="{wandb_key}"' if wandb_key else "",
        "@@CONFIG_B64@@": "${configBase64}" if as_deployed else config_b64,
        "@@TRAINER_B64@@": "${trainerScriptBase64}" if as_deployed else _b64(trainer),
        "@@EXEC_JOB_ID@@": "${jobId}" if as_deployed else job_id,
    }
    script = TEMPLATE
    for marker, value in replace.items():
        script = script.replace(marker, value)
    return script


def pod_environment(script: str, *, training_config_id: str, env_vars: dict[str, str]) -> dict[str, str]:
    """createPod's env: TRAINING_CONFIG_ID, TRAINING_SCRIPT_B64 (Buffer base64 of the script), then
    the deploy route's envVars (the request's environment_variables first, the job's after)."""
    return {"TRAINING_CONFIG_ID": training_config_id, "TRAINING_SCRIPT_B64": _b64(script), **env_vars}


#: The deploy route's fallback SUPABASE_ANON_KEY (route.ts): a JWT with the anon role.
ROUTE_ANON_KEY = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6InBsYWNlaG9sZGVyIiwicm9sZSI6ImFub24"
                  "iLCJpYXQiOjE2NDUxOTI4MjAsImV4cCI6MTk2MDc2ODgyMH0.M1YwMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE")


def deploy_env_vars(*, job_id: str, job_token: str, user_id: str, supabase_url: str, anon_key: str,
                    service_key: str, dataset_url: str, model_name: str, app_url: str, internal_api_key: str,
                    environment_variables: dict[str, str] | None = None) -> dict[str, str]:
    """The deploy route's envVars (route.ts), in its order; no HF_TOKEN / HF_REPO_NAME (the user
    stored no Hub credentials)."""
    return {
        **(environment_variables or {}),
        "JOB_ID": job_id, "JOB_TOKEN": job_token, "USER_ID": user_id, "SUPABASE_URL": supabase_url,
        "SUPABASE_ANON_KEY": anon_key, "SUPABASE_SERVICE_KEY": service_key, "DATASET_URL": dataset_url,
        "MODEL_NAME": model_name, "METRICS_API_URL": f"{app_url}/api/training/local/metrics",
        "ALERT_API_URL": f"{app_url}/api/alerts/trigger", "INTERNAL_API_KEY": internal_api_key,
        "DEFAULT_DATALOADER_NUM_WORKERS": "4", "DEFAULT_DATALOADER_PREFETCH_FACTOR": "2", "DEFAULT_PRETOKENIZE": "true",
    }


def demo_job(stored: dict) -> dict:
    """A real stored configuration for the demo model on a CPU, in seconds: 12 steps, an evaluation
    and a checkpoint every 6; 4-bit weights off (they need a GPU). The rest as the user stored it
    (its LoRA, scheduler, paged optimizer, bf16, eval split, predictions block)."""
    config = json.loads(json.dumps(stored))
    config["model"]["name"] = config["tokenizer"]["name"] = "demo"
    config["training"].update(
        num_epochs=1, max_steps=12, batch_size=16, eval_batch_size=16, max_length=32, eval_steps=6, save_steps=6,
        logging_steps=6, learning_rate=0.002, gradient_accumulation_steps=1, warmup_steps=0, quantization={},
        gradient_checkpointing=False)
    return config


def supabase_with_job(table: PostgrestDouble, *, job_id: str, service_key: str, config: dict) -> LoopbackServer:
    """The Supabase API of the platform: training_predictions (the PostgREST double) and the job's
    row in local_training_jobs, as the deploy route inserted it (its `config`), for the service key."""
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/rest/v1/local_training_jobs":
            if request.headers.get("apikey") != service_key:
                return httpx.Response(401, json={"message": "Invalid API key"})
            found = request.url.params.get("id") == f"eq.{job_id}"
            return httpx.Response(200, json=[{"config": config}] if found else [])
        return table(request)
    return serve(handler)


def gzipped_demo_rows(path: Path, rows: int = 400) -> Path:
    """The demo's training rows as the platform's signed URL serves a dataset (.jsonl.gz)."""
    path.write_bytes(gzip.compress("".join(TRAIN_FILE.read_text().splitlines(keepends=True)[:rows]).encode()))
    return path


#: generateRunPodScript's template (script-builder.ts), its JavaScript escapes resolved; @@…@@ are
#: its interpolations.
TEMPLATE = '''#!/bin/bash
# PHASE 2 FIX: Enhanced logging and error handling
# Removed -e flag to prevent immediate exit on error and allow debugging
set -uo pipefail

# Setup environment
export HF_TOKEN="@@HF_TOKEN@@"
@@WANDB_LINE@@
export JOB_ID="@@JOB_ID@@"

# Prevent restart loops - check if script already ran
LOCK_FILE="/workspace/.training_started"
if [ -f "$LOCK_FILE" ]; then
  echo "================================================"
  echo "[$(date)] DETECTED CONTAINER RESTART"
  echo "================================================"
  echo "Training script already started at: $(cat $LOCK_FILE)"
  echo "This is likely a container restart. Keeping container alive..."
  echo "Check logs above for the actual error that caused restart."
  echo ""
  tail -f /dev/null
fi

# Mark that we've started (prevents restart loops)
echo "$(date)" > "$LOCK_FILE"

echo "================================================"
echo "[$(date)] RunPod Training Script Started"
echo "================================================"

echo "=== System Information ==="
echo "Date: $(date)"
echo "Hostname: $(hostname)"
echo "Working Directory: $(pwd)"
echo "GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1 || echo 'No GPU detected')"
echo "CUDA Version: $(nvcc --version 2>&1 | grep release || echo 'CUDA not found')"
echo "Python: $(python --version 2>&1 || echo 'Python not found')"
echo "Disk Space: $(df -h /workspace | tail -1)"
echo "=========================="
echo ""

# Create workspace directory
mkdir -p /workspace
cd /workspace

# Install dependencies
echo "[$(date)] Installing dependencies..."

# Verify Python is available
if ! python --version >/dev/null 2>&1; then
  echo "[$(date)] ✗ ERROR: Python not found in PATH"
  echo "[$(date)] Waiting 60s before exit for log inspection..."
  sleep 60
  exit 1
fi

# Upgrade pip first to avoid version issues
echo "[$(date)] Upgrading pip..."
if python -m pip install --root-user-action=ignore --upgrade pip >/dev/null 2>&1; then
  echo "[$(date)] ✓ Pip upgraded: $(python -m pip --version)"
else
  echo "[$(date)] ✗ WARNING: Failed to upgrade pip, continuing with existing version"
fi

echo "[$(date)] Current TRL version (before upgrade): $(python -m pip show trl 2>/dev/null | grep Version || echo 'not installed')"

# Uninstall old trl first, then install fresh to avoid caching issues
python -m pip uninstall -y trl 2>/dev/null || true

# Remove torchvision and torchaudio if present (not needed for LLM text training)
# This prevents version conflicts when PyTorch gets upgraded
echo "[$(date)] Removing torchvision/torchaudio (not needed for text LLM training)..."
python -m pip uninstall -y torchvision torchaudio 2>/dev/null || true

# Pin PyTorch to 2.1.0 to match base image CUDA 11.8 (prevents 1.5GB CUDA 12 download)
echo "[$(date)] Pinning PyTorch to 2.1.0 (matches CUDA 11.8 base image)..."
python -m pip install --root-user-action=ignore --no-cache-dir "torch==2.1.0" 2>&1 | grep -v "Requirement already satisfied" || true

echo "[$(date)] Installing training dependencies..."
if python -m pip install --root-user-action=ignore --no-cache-dir \
   "trl==0.26.0" \
   "transformers>=4.40.0" \
   "datasets>=2.18.0" \
   "accelerate>=0.27.0" \
   "peft>=0.9.0" \
   "bitsandbytes>=0.42.0" \
   "tensorboard>=2.14.0" \
   "pynvml>=11.5.0" \
   "supabase>=2.0.0" \
   "huggingface_hub>=0.20.0" \
   "requests>=2.31.0" \
   "scipy"; then
  echo "[$(date)] ✓ Dependencies installed successfully"
  echo "[$(date)] TRL version: $(python -m pip show trl | grep Version)"
  echo "[$(date)] Transformers version: $(python -m pip show transformers | grep Version)"
  # Verify the import works
  python -c "from trl import SFTTrainer; print('[$(date)] ✓ TRL imports verified')" || {
    echo "[$(date)] ✗ ERROR: TRL imports failed after upgrade"
    python -m pip show trl
    echo "[$(date)] Waiting 60s before exit for log inspection..."
    sleep 60
    exit 1
  }
else
  echo "[$(date)] ✗ ERROR: Failed to install dependencies"
  echo "[$(date)] Waiting 60s before exit for log inspection..."
  sleep 60
  exit 1
fi

# Download training data
echo "[$(date)] Downloading dataset..."
if [ -z "$DATASET_URL" ]; then
    echo "[$(date)] ✗ ERROR: DATASET_URL environment variable is not set"
    sleep 60
    exit 1
fi

if wget -q -O dataset_download "$DATASET_URL"; then
  echo "[$(date)] ✓ Dataset downloaded ($(du -h dataset_download | cut -f1))"

  # Check if file is gzipped by reading magic bytes (1f 8b)
  MAGIC_BYTES=$(od -An -tx1 -N2 dataset_download | tr -d ' ')
  if [ "$MAGIC_BYTES" = "1f8b" ]; then
    echo "[$(date)] Dataset is gzipped (magic bytes: $MAGIC_BYTES) - decompressing..."
    if gunzip -c dataset_download > dataset.jsonl; then
      echo "[$(date)] ✓ Dataset decompressed ($(wc -l < dataset.jsonl) lines)"
      rm dataset_download
    else
      echo "[$(date)] ✗ ERROR: Failed to decompress gzipped dataset"
      echo "[$(date)] Waiting 60s before exit for log inspection..."
      sleep 60
      exit 1
    fi
  else
    echo "[$(date)] Dataset is not gzipped (magic bytes: $MAGIC_BYTES) - using directly..."
    mv dataset_download dataset.jsonl
    echo "[$(date)] ✓ Dataset ready ($(wc -l < dataset.jsonl) lines)"
  fi
else
  echo "[$(date)] ✗ ERROR: Failed to download dataset"
  echo "[$(date)] URL was: $DATASET_URL"
  echo "[$(date)] This could mean the download token has expired (tokens expire after 2 hours)"
  echo "[$(date)] Waiting 60s before exit for log inspection..."
  sleep 60
  exit 1
fi

# Write config file
echo "@@CONFIG_B64@@" | base64 -d > /workspace/config.json
echo "[$(date)] ✓ config.json created"

# Write trainer script
echo "@@TRAINER_B64@@" | base64 -d > /workspace/standalone_trainer.py
echo "[$(date)] ✓ standalone_trainer.py created"

# Run training
echo "[$(date)] =========================================="
echo "[$(date)] Starting training with standalone_trainer.py..."
echo "[$(date)] =========================================="

if python /workspace/standalone_trainer.py --config /workspace/config.json --execution-id @@EXEC_JOB_ID@@ 2>&1 | tee training_output.log; then
  EXIT_CODE=${PIPESTATUS[0]}
  echo "[$(date)] =========================================="
  echo "[$(date)] ✓ Training completed successfully! (exit code: $EXIT_CODE)"
  echo "[$(date)] Model saved to /workspace/fine_tuned_model"
  echo "[$(date)] =========================================="

  # Keep pod alive for 1 hour to allow model download
  echo "[$(date)] Pod will remain active for 1 hour for model download"
  echo "[$(date)] You can download the model from /workspace/fine_tuned_model"
  sleep 3600

  echo "[$(date)] Shutting down pod"
  exit 0
else
  EXIT_CODE=${PIPESTATUS[0]}
  echo "[$(date)] =========================================="
  echo "[$(date)] ✗ Training failed with exit code: $EXIT_CODE"
  echo "[$(date)] =========================================="
  echo "[$(date)] Last 50 lines of training output:"
  tail -50 training_output.log || echo "Could not read training log"

  # Wait before terminating to allow log inspection
  echo "[$(date)] Waiting 120s before terminating pod (allows log inspection in RunPod console)"
  sleep 120

  echo "[$(date)] Terminating pod"
  exit $EXIT_CODE
fi
'''
