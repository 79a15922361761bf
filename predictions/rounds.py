"""One prediction round: generate for the fixed samples, score, write. And the record of rounds.

This is the "what and how" the callback calls; it knows nothing of the Trainer. A failure inside
a round (generation error, out of memory, a writer error) is logged with its cause and counted,
and never propagates: training must go on.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from predictions.generator import generate_predictions
from predictions.rows import Sample, Scores, make_row
from predictions.scorer import mean_scores, score
from trainer.config import PredictionsConfig


@dataclass
class RoundResult:
    round: int
    step: int
    epoch: float
    samples: int
    seconds: float
    ok: bool
    means: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class PredictionRounds:
    """Runs rounds for a fixed sample and keeps their results.

    `local` always receives the rows (the spool); `remote`, when set, is a BackgroundWriter whose
    `submit` returns at once. Both are called from the main process only.
    """

    def __init__(
        self,
        samples: list[Sample],
        tokenizer,
        settings: PredictionsConfig,
        *,
        job_id: str,
        user_id: str | None,
        local,
        remote=None,
        json_schema: dict[str, Any] | None = None,
        expected_rounds: int | None = None,
        log: Callable[[str], None] = print,
    ):
        assert samples, "a prediction round needs at least one sample"
        self.samples, self.tokenizer, self.settings = samples, tokenizer, settings
        self.job_id, self.user_id = job_id, user_id
        self.local, self.remote, self.json_schema, self.log = local, remote, json_schema, log
        self.expected_rounds = expected_rounds
        self.results: list[RoundResult] = []

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    def run(self, model, *, step: int, epoch: float) -> RoundResult:
        """Generate, score and write one round. Never raises."""
        number = len(self.results) + 1
        start = time.perf_counter()
        try:
            rows, scores = self._rows(model, step, epoch)
            means = mean_scores(scores)
            self._write(rows)
            result = RoundResult(number, step, epoch, len(rows), time.perf_counter() - start, True, means)
        except Exception as e:  # noqa: BLE001 — any failure of a round is counted, never fatal
            if isinstance(e, torch.OutOfMemoryError) and torch.cuda.is_available():
                torch.cuda.empty_cache()  # give training its memory back before the next step
            cause = f"{type(e).__name__}: {e}"
            self.log(f"predictions: round {number} at step {step} FAILED ({cause}); training goes on, "
                     "the next round tries again")
            self.log("".join(traceback.format_exception(e, limit=-3)).rstrip())
            result = RoundResult(number, step, epoch, 0, time.perf_counter() - start, False, error=cause)
        else:
            scores = " ".join(f"{k}={v:.3f}" for k, v in means.items())
            self.log(f"predictions: round {number} step {step} epoch {epoch:.2f}: {len(rows)} samples "
                     f"in {result.seconds:.1f}s; {scores}")
            if number == 1 and self.expected_rounds:
                self.log(f"predictions: projected cost: {self.expected_rounds} rounds × {result.seconds:.1f}s ≈ "
                         f"{self.expected_rounds * result.seconds:.0f}s of generation in all")
        self.results.append(result)
        return result

    def _rows(self, model, step: int, epoch: float) -> tuple[list[dict[str, Any]], list[Scores]]:
        s = self.settings
        generations = generate_predictions(
            model,
            self.tokenizer,
            [x.prompt for x in self.samples],
            max_new_tokens=s.max_new_tokens,
            do_sample=s.do_sample,
            temperature=s.temperature,
            top_p=s.top_p,
            seed=s.seed,
            batch_size=s.batch_size,
        )
        rows, all_scores = [], []
        for sample, gen in zip(self.samples, generations, strict=True):
            scores = score(
                gen.text,
                sample.ground_truth,
                json_parse=s.validators.json_parse,
                json_schema=self.json_schema,
            )
            rows.append(make_row(job_id=self.job_id, user_id=self.user_id, epoch=epoch, step=step,
                                 sample=sample, generation=gen, scores=scores))
            all_scores.append(scores)
        return rows, all_scores

    def _write(self, rows: list[dict[str, Any]]) -> None:
        # The spool first: if it fails the round is failed (nothing would keep the rows), but the
        # remote writer still gets them — better one copy than none.
        try:
            self.local.write(rows)
        finally:
            if self.remote is not None:
                self.remote.submit(rows)

