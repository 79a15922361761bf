"""What a slow database costs the training thread: a round handed to the BackgroundWriter vs
written inline. Prints the ratio of the two, measured in one run (target: well under 0.01).

    python bench/bench_background_writer.py [--rounds 20] [--write-ms 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predictions.store.writers.background import BackgroundWriter  # noqa: E402


class SlowWriter:
    """A database that takes `seconds` per request."""

    name = "slow"

    def __init__(self, seconds: float):
        self.seconds, self.rows = seconds, 0

    def write(self, rows):
        time.sleep(self.seconds)
        self.rows += len(rows)

    def close(self):
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--write-ms", type=float, default=100)
    opts = parser.parse_args()
    rows = [{"step": 1, "sample_index": i} for i in range(32)]

    inline = SlowWriter(opts.write_ms / 1000)
    start = time.perf_counter()
    for _ in range(opts.rounds):
        inline.write(rows)
    inline_s = time.perf_counter() - start

    background = BackgroundWriter(SlowWriter(opts.write_ms / 1000))
    start = time.perf_counter()
    for _ in range(opts.rounds):
        background.submit(rows)
    submit_s = time.perf_counter() - start
    stats = background.close()
    assert stats.rows_written == opts.rounds * len(rows), stats

    print(f"inline writes:      {inline_s * 1000:9.1f} ms on the training thread for {opts.rounds} rounds")
    print(f"background submits: {submit_s * 1000:9.3f} ms on the training thread (all rows delivered)")
    print(f"ratio background/inline: {submit_s / inline_s:.5f}")


if __name__ == "__main__":
    main()
