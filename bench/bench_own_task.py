"""A task of your own on the demo model, as a new user would try it: answers made of pieces the
training data shows (digits, letters, words, punctuation), never a whole evaluation answer. Writes
the task's files, runs the entrypoint on them with the demo's defaults (nothing set but the data)
and prints exact match per round, the training time and the command it ran.

    python bench/bench_own_task.py [--train 3000] [--eval 200] [--out /tmp/own-task] [--set KEY=JSON ...]

The three kinds of rows: a phone number formatted ("phone 5551234567" → "(555) 123-4567"), a date
rewritten ("date 2024-03-15" → "15/03/2024"), an order code ("order fox 42" → "FOX-0042").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = "fox owl elk yak emu cat dog bee ant cow kiwi plum lime pear fig rye oat pea".split()


def row(rng: random.Random) -> dict[str, str]:
    kind = rng.randrange(3)
    if kind == 0:
        digits = "".join(rng.choice("0123456789") for _ in range(10))
        return {"prompt": f"phone {digits}", "completion": f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"}
    if kind == 1:
        y, m, d = rng.randint(1950, 2049), rng.randint(1, 12), rng.randint(1, 28)
        return {"prompt": f"date {y}-{m:02d}-{d:02d}", "completion": f"{d:02d}/{m:02d}/{y}"}
    name, number = rng.choice(NAMES), rng.randint(1, 9999)
    return {"prompt": f"order {name} {number}", "completion": f"{name.upper()}-{number:04d}"}


def write_task(out: Path, train: int, evaluation: int) -> tuple[Path, Path]:
    rng = random.Random(7)
    train_rows = [row(rng) for _ in range(train)]
    seen = {r["completion"] for r in train_rows}
    eval_rows = []
    while len(eval_rows) < evaluation:  # never an answer the training data holds whole
        r = row(rng)
        if r["completion"] not in seen:
            eval_rows.append(r)
            seen.add(r["completion"])
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.jsonl", out / "eval.jsonl"
    for path, rows in zip(paths, (train_rows, eval_rows)):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--eval", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("/tmp/own-task"))
    parser.add_argument("--training-config", default=None, help="TRAINING_CONFIG as JSON (default: unset)")
    opts = parser.parse_args()
    train, evaluation = write_task(opts.out, opts.train, opts.eval)
    env = {k: v for k, v in os.environ.items() if k not in ("TRAINING_CONFIG", "PREDICTIONS_CONFIG")}
    env.update(DATASET_PATH=str(train), EVAL_DATASET_PATH=str(evaluation), OUTPUT_DIR=str(opts.out / "outputs"),
               FRESH_RUN="1")
    if opts.training_config:
        env["TRAINING_CONFIG"] = opts.training_config
    shown = " ".join(f"{k}={v!r}" if k == "TRAINING_CONFIG" else f"{k}={v}" for k, v in env.items()
                     if k in ("DATASET_PATH", "EVAL_DATASET_PATH", "OUTPUT_DIR", "FRESH_RUN", "TRAINING_CONFIG"))
    print(f"command: {shown} {sys.executable} entrypoint.py", flush=True)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "entrypoint.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"exit {proc.returncode}:\n{out[-3000:]}")
    rows = [json.loads(line) for line in (opts.out / "outputs" / "predictions.jsonl").read_text().splitlines()]
    exact: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        exact[r["step"]].append(r["exact_match"])
    runtime = re.search(r"'train_runtime': '?([0-9.]+)", out)
    for step, values in sorted(exact.items()):
        print(f"step {step:>5}: exact match {sum(values) / len(values):.0%} of {len(values)} samples")
    print(f"wall time {wall:.0f}s; training {runtime.group(1) if runtime else '?'}s")
    print("\n".join(line for line in out.splitlines() if "WARNING" in line))


if __name__ == "__main__":
    main()
