"""The report of a large job: 500 samples × 100 rounds (50,000 rows) read from a spool, analysed,
printed for a terminal and rendered as HTML. Prints each stage's time and the page's size (the
target: seconds, and a page of a few MB).

    python bench/bench_report.py [--samples 500] [--rounds 100]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402

from predictions.report.history import build_history, spool_rows  # noqa: E402
from predictions.report.view import print_history, render_html  # noqa: E402

WORDS = "red blue green black white gold pink gray cat dog fox owl bee ant cow elk yak emu".split()


def spool(path: Path, samples: int, rounds: int) -> None:
    """Rows in the contract's shape: answers of 6-12 words that drift towards the ground truth,
    with now and then a sample that falls back (a regression)."""
    rng = random.Random(0)
    truths = [" ".join(rng.choices(WORDS, k=rng.randint(6, 12))) for _ in range(samples)]
    answers = [" ".join(rng.choices(WORDS, k=8)) for _ in range(samples)]
    with path.open("w") as f:
        for r in range(rounds):
            step = r * 50
            for i, truth in enumerate(truths):
                change = 0.03 if answers[i] == truth else 0.4  # a right answer mostly stays right
                if rng.random() < change:  # the answer changes this round: closer to the truth, or off
                    words = answers[i].split()
                    if rng.random() < 0.97:
                        words = truth.split()[: rng.randint(len(truth.split()) - 2, len(truth.split()))]
                    else:
                        words = rng.choices(WORDS, k=rng.randint(4, 12))
                    answers[i] = " ".join(words)
                right = answers[i] == truth
                cer = 0.0 if right else min(1.0, abs(len(answers[i]) - len(truth)) / len(truth) + rng.random() * 0.1)
                f.write(json.dumps({
                    "job_id": "bench", "user_id": None, "epoch": r // 25, "epoch_progress": r / 25, "step": step,
                    "sample_index": i, "prompt": f"reverse: {truth}", "ground_truth": truth,
                    "prediction": answers[i], "exact_match": 1.0 if right else 0.0, "char_error_rate": cer,
                    "length_ratio": len(answers[i]) / len(truth), "word_overlap": 1 - cer,
                    "completion_tokens": len(answers[i].split()), "latency_ms": 40, "sample_source": "dataset",
                    "generation_error": None,
                }) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.jsonl"
        spool(path, args.samples, args.rounds)
        print(f"spool: {args.samples} samples × {args.rounds} rounds, {path.stat().st_size / 1e6:.1f} MB")
        t0 = time.perf_counter()
        rows = spool_rows(path, "bench")
        t1 = time.perf_counter()
        history = build_history(rows, job_id="bench")
        t2 = time.perf_counter()
        print_history(history, Console(file=io.StringIO(), width=80))
        t3 = time.perf_counter()
        page = render_html(history)
        t4 = time.perf_counter()
    print(f"read {t1 - t0:.2f}s, analyse {t2 - t1:.2f}s, terminal {t3 - t2:.2f}s, HTML {t4 - t3:.2f}s; "
          f"total {t4 - t0:.2f}s")
    print(f"HTML page: {len(page.encode()) / 1e6:.2f} MB; {len(history.regressed)} regressed samples, "
          f"{sum(s.ever_right for s in history.samples)} ever right")


if __name__ == "__main__":
    main()
