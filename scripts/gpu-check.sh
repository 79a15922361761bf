#!/usr/bin/env bash
# One GPU, under 8 minutes: a QLoRA DPO run and a packed SFT run through the entrypoint, on a small
# Llama-architecture model built from a config (no hub), bf16 and a paged optimizer, with predictions.
# Prints each run's last lines and the rows it wrote; exits non-zero when a run fails.
#   bash scripts/gpu-check.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
WORK=${1:-$(mktemp -d /tmp/gpu-check.XXXXXX)}
mkdir -p "$WORK"
"$PY" - "$WORK" <<'PYEOF'
import json, random, sys
from pathlib import Path
sys.path.insert(0, ".")
from trainer.demo import WORDS, build_model, build_tokenizer
work = Path(sys.argv[1]); rng = random.Random(0)
pref, sft = [], []
for i in range(512):
    w = [rng.choice(WORDS) for _ in range(rng.randint(3, 12 if i % 5 else 40))]
    p, right, wrong = "reverse: " + " ".join(w), " ".join(reversed(w)), " ".join(w)
    pref.append({"prompt": p, "chosen": right, "rejected": wrong}); sft.append({"prompt": p, "completion": right})
for name, rows in (("pref.jsonl", pref), ("sft.jsonl", sft)):
    (work / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
tok = build_tokenizer([" ".join(WORDS), "reverse:"])
model = build_model(tok, hidden_size=512, layers=8, heads=8)  # ~30M parameters, Llama architecture
model.save_pretrained(work / "model"); tok.save_pretrained(work / "model")
PYEOF
run() {  # name, data, training config
  local out="$WORK/out-$1"; rm -rf "$out"; local start=$SECONDS
  env -u SUPABASE_URL -u SUPABASE_DB_URL OUTPUT_DIR="$out" MODEL_NAME="$WORK/model" DATASET_PATH="$WORK/$2" JOB_ID="gpu-$1" \
    NUM_PROCESSES=1 TRAINING_CONFIG="$3" \
    PREDICTIONS_CONFIG='{"enabled":true,"sample_count":16,"sample_frequency":"steps","step_interval":40,"baseline":true,"max_new_tokens":16}' \
    timeout 210 "$PY" entrypoint.py > "$WORK/$1.log" 2>&1 || { tail -40 "$WORK/$1.log"; echo "gpu-check: $1 FAILED"; exit 1; }
  grep -E "^(predictions: round|progress: done|\{'train_runtime)" "$WORK/$1.log" | tail -6
  echo "gpu-check: $1 ok in $((SECONDS - start))s, $(wc -l < "$out/predictions.jsonl") rows"
}
COMMON='"max_steps":120,"per_device_train_batch_size":16,"learning_rate":0.0005,"logging_steps":20,"save_strategy":"no","eval_strategy":"no","mixed_precision":"bf16","optim":"paged_adamw_8bit","max_seq_length":128'
run dpo-qlora pref.jsonl "{\"method\":\"dpo\",\"finetuning\":\"qlora\",\"lora\":{\"r\":16},$COMMON}"
run sft-packed sft.jsonl "{\"method\":\"sft\",\"packing\":true,$COMMON}"
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader || true
