"""One prediction round: generate for the fixed samples, score, write. And the record of rounds.

This is the "what and how" the callback calls; it knows nothing of the Trainer. A failure inside
a round (generation error, out of memory, a writer error) is logged with its cause and counted,
and never propagates: training must go on.

Every rank takes part. The fixed sample is split across the ranks once (`split_samples`: balanced
by prompt length, the same on every rank); at each round every rank generates its share with its
own copy of the model, and the shares are gathered to the main process, which scores, orders and
writes them, exactly as one process would. Greedy answers do not depend on which prompts share a
batch (predictions/generator.py), so they do not depend on the number of ranks either.

A rank that fails its share fails the whole round on every rank together: each rank sends "ok"
or its error in the same gather, so none waits for another and nothing of the round is written.
A sample that fails alone is a failed row (prediction '', its `generation_error`) and the rest of
the round is kept.

Sharded models (FSDP2, `RankGroup.synced`): no rank holds the whole model, so the ranks generate in
lockstep — every rank makes the same number of generate calls and each keeps stepping until all
are done. A failure *inside* that lockstep leaves the other ranks waiting in the shards'
collectives, so it is not caught: it ends the process (`SyncedGenerationFailed`), the launcher
stops the others, and the job exits instead of hanging. Everything that can fail before the
lockstep is checked first and exchanged like a share's error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch

from predictions.generator import SampleFailure, batch_count, generate_predictions, token_lengths
from predictions.preference import PreferenceScorer, preference_means
from predictions.scorer import mean_scores, score
from predictions.store.rows import Generation, Sample, Scores, make_row
from trainer.config.schema import PredictionsConfig

log = logging.getLogger(__name__)

#: The rounds log, next to the spool: one JSON object per round attempt (see `round_record`).
ROUNDS_LOG_NAME = "prediction_rounds.jsonl"

#: A TEST HOOK, read only by tests: "RANK:STEP" makes that rank raise in its share of the round
#: at that step (e.g. "1:5"), to show that the round fails on every rank and training goes on.
TEST_FAIL_RANK_VARIABLE = "PREDICTIONS_TEST_FAIL_RANK"


class RoundFailed(RuntimeError):
    """The round as a whole could not be generated (every sample failed); nothing is written."""


class ShareFailed(RoundFailed):
    """A rank could not generate its share of a round; the round fails on every rank."""


class SyncedGenerationFailed(RuntimeError):
    """Lockstep generation of a sharded model failed on this rank: the other ranks wait in a
    collective this rank will not join, so the process must end rather than go on training."""


@dataclass(frozen=True)
class RankGroup:
    """This process's place among the training processes, and the one collective a round needs."""

    rank: int = 0
    world_size: int = 1
    synced: bool = False  # a sharded model: generate in lockstep (see the module's docstring)
    local_world_size: int | None = None  # processes per node (torchrun numbers a node's ranks together); None: one node

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def per_node(self) -> int:
        return self.local_world_size or self.world_size

    @property
    def nodes(self) -> int:
        return max(1, self.world_size // self.per_node)

    @property
    def node(self) -> int:
        return self.rank // self.per_node

    def node_ranks(self, node: int | None = None) -> range:
        """The global ranks of `node` (this one by default)."""
        node = self.node if node is None else node
        return range(node * self.per_node, (node + 1) * self.per_node)

    def spread(self) -> str:
        """'' for one process, else ' over 4 ranks' / ' over 4 ranks on 2 nodes'."""
        if self.world_size == 1:
            return ""
        return f" over {self.world_size} ranks" + (f" on {self.nodes} nodes" if self.nodes > 1 else "")

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank (one pickle round trip: small
        objects only — a share's texts and counts)."""
        if self.world_size == 1:
            return [value]
        import torch.distributed as dist

        # Not accelerate's gather_object: without accelerate's state (a torch.distributed.run worker) it gathers none.
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


def split_samples(lengths: Sequence[int], world_size: int) -> list[list[int]]:
    """Sample positions per rank: the same number of prompts (±1) on each, balanced by length.

    Longest first, dealt in a snake (0, 1, …, n-1, n-1, …, 0, 0, …): the heaviest prompts are
    spread over the ranks and each rank's total length evens out. Ties go by position, so every
    rank computes the same split. Counts matter more than lengths: a round's cost is mostly
    max_new_tokens decoding steps per batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for k, i in enumerate(order):
        lap, pos = divmod(k, world_size)
        shares[pos if lap % 2 == 0 else world_size - 1 - pos].append(i)
    return [sorted(share) for share in shares]


def with_prompts(triples: Sequence[tuple[int, str, str]], tokenizer, *, what: str = "samples",
                 quiet: bool = False) -> list[tuple[int, str, str]]:
    """The (source_index, prompt, ground_truth) triples a round can generate for: a prompt that
    tokenises to nothing has nothing to continue and would fail every round, so it is dropped
    before the draw (with a line saying which rows, unless `quiet`: every rank draws, one says so)."""
    lengths = token_lengths(tokenizer, [prompt for _, prompt, _ in triples])
    dropped = [t[0] for t, n in zip(triples, lengths) if n == 0]
    if dropped and not quiet:
        shown = ", ".join(map(str, dropped[:5])) + (f" and {len(dropped) - 5} more" if len(dropped) > 5 else "")
        log.info(f"predictions: dropped {len(dropped)} {what} whose prompt is empty (source_index {shown}); "
                 "a round cannot generate from nothing")
    return [t for t, n in zip(triples, lengths) if n > 0]


def fault_hook_from_env(environ=os.environ) -> tuple[int, int] | None:
    """TEST HOOK: (rank, step) from PREDICTIONS_TEST_FAIL_RANK="RANK:STEP", else None."""
    value = environ.get(TEST_FAIL_RANK_VARIABLE)
    if not value:
        return None
    rank, step = value.split(":")
    return int(rank), int(step)


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
    failed_samples: int = 0
    generated_tokens: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0


class PredictionRounds:
    """Runs rounds for a fixed sample and keeps their results. `run` is collective: every rank
    calls it at the same step.

    On the main process, `local` always receives the rows (the spool); `remote`, when set, is a
    BackgroundWriter whose `submit` returns at once; `rounds_log` is the rounds log's path. The
    other ranks need none of them.
    """

    def __init__(
        self,
        samples: list[Sample],
        tokenizer,
        settings: PredictionsConfig,
        *,
        job_id: str,
        user_id: str | None,
        local=None,
        remote=None,
        json_schema: dict[str, Any] | None = None,
        expected_rounds: int | None = None,
        group: RankGroup | None = None,
        rounds_log: Path | None = None,
        test_fault: tuple[int, int] | None = None,
        preference: PreferenceScorer | None = None,
    ):
        assert samples, "a prediction round needs at least one sample"
        self.samples, self.tokenizer, self.settings = samples, tokenizer, settings
        self.job_id, self.user_id = job_id, user_id
        self.local, self.remote, self.json_schema = local, remote, json_schema
        self.expected_rounds, self.rounds_log, self.test_fault = expected_rounds, rounds_log, test_fault
        self.group = group or RankGroup()
        # The main process scores preference with its own copy of the model; a sharded one it does not hold.
        self.preference = preference if not self.group.synced else None
        assert not self.group.is_main or local is not None, "the main process writes the spool"
        lengths = token_lengths(tokenizer, [s.prompt for s in samples])
        shares = split_samples(lengths, self.group.world_size)
        self.share = [samples[i] for i in shares[self.group.rank]]
        # Lockstep: as many generate calls on every rank as on the busiest one.
        self.calls = max(batch_count([lengths[i] for i in share], settings.batch_size) for share in shares)
        self.results: list[RoundResult] = []

    @property
    def failed(self) -> int:
        return sum(not r.ok for r in self.results)

    def run(self, model, *, step: int, epoch: float) -> RoundResult | None:
        """Generate, score and write one round. Never raises (except SyncedGenerationFailed, see
        the module's docstring). The main process returns the round's result; the others None."""
        number = len(self.results) + 1
        start = time.perf_counter()
        outcomes = self._generate_everywhere(model, step)
        if not self.group.is_main:
            self.results.append(RoundResult(number, step, epoch, 0, time.perf_counter() - start,
                                            all(ok for ok, _ in outcomes)))
            if self.group.nodes > 1 and self.group.rank == self.group.node_ranks()[0]:
                # Each pod's operator sees its own part; node 0's is in its round line.
                log.info(f"predictions: share of round {number} at step {step}: {self._node_share(outcomes)}; "
                         "node 0 scores and writes the round")
            return None
        try:
            errors = [f"rank {r}: {payload}" if len(outcomes) > 1 else str(payload)
                      for r, (ok, payload) in enumerate(outcomes) if not ok]
            if errors:
                raise ShareFailed("; ".join(errors))
            generations = self._merge([payload for _, payload in outcomes])
            failures = [g for g in generations if isinstance(g, SampleFailure)]
            if len(failures) == len(generations):  # not one bad sample: the round itself failed
                raise RoundFailed(f"every sample failed to generate, e.g. {failures[0].error}")
            rows, scores, failed = self._rows(generations, step, epoch, model)
            means = mean_scores(scores) | preference_means([s.values for s in scores])
            self._write(rows)
            tokens = sum(g.completion_tokens for g in generations if isinstance(g, Generation))
            result = RoundResult(number, step, epoch, len(rows), time.perf_counter() - start, True, means,
                                 failed_samples=failed, generated_tokens=tokens)
        except Exception as e:  # noqa: BLE001 — any failure of a round is counted, never fatal
            cause = f"{type(e).__name__}: {e}"
            log.info(f"predictions: round {number} at step {step} FAILED ({cause}); training goes on, "
                     "the next round tries again")
            if not isinstance(e, RoundFailed):  # its cause was logged where it happened
                log.info("".join(traceback.format_exception(e, limit=-3)).rstrip())
            result = RoundResult(number, step, epoch, 0, time.perf_counter() - start, False, error=cause)
        else:
            scores_text = " ".join(f"{k}={v:.3f}" for k, v in means.items())
            failed_text = f" ({failed} failed to generate)" if failed else ""
            mine = f" ({self._node_share(outcomes)})" if self.group.nodes > 1 else ""
            log.info(f"predictions: round {number} step {step} epoch {epoch:.2f}: {len(rows)} samples"
                     f"{self.group.spread()}{mine}{failed_text} "
                     f"in {result.seconds:.1f}s, {result.tokens_per_s:.0f} generated tokens/s; {scores_text}")
            same = same_answer(generations)
            if same is not None and step > 0:  # fresh weights often answer alike: news only once trained
                log.info(f"predictions: WARNING round {number} step {step}: every sample got the same answer "
                         f"({same[:60]!r}): the model answers alike whatever the prompt — more steps, a higher "
                         "learning_rate, or answers the tokenizer can write (`check` says)")
            if number == 1 and self.expected_rounds:
                log.info(f"predictions: projected cost: {self.expected_rounds} rounds × {result.seconds:.1f}s ≈ "
                         f"{self.expected_rounds * result.seconds:.0f}s of generation in all")
        self.results.append(result)
        self._record(result)
        return result

    def _node_share(self, outcomes: list[tuple[bool, Any]]) -> str:
        """'node 1 of 2: 4 of 8 samples on ranks 2-3' from the gathered shares."""
        ranks = self.group.node_ranks()
        count = sum(len(outcomes[r][1]) for r in ranks if outcomes[r][0])
        where = f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks[0]}-{ranks[-1]}"
        return f"node {self.group.node} of {self.group.nodes}: {count} of {len(self.samples)} samples on {where}"

    # -- every rank --------------------------------------------------------------------------
    def _generate_everywhere(self, model, step: int) -> list[tuple[bool, Any]]:
        """Each rank's (ok, share) or (False, error), gathered on every rank."""
        if self.group.synced:
            # Nothing can fail between this gather and the lockstep but the lockstep itself.
            ready = self.group.all_gather(self._ready(step))
            if not all(ok for ok, _ in ready):
                return ready
        try:
            if not self.group.synced:
                self._maybe_fail(step)
            outcome: tuple[bool, Any] = (True, self._generate_share(model))
        except SyncedGenerationFailed:
            raise
        except Exception as e:  # noqa: BLE001 — reported to every rank in the gather below
            if isinstance(e, torch.OutOfMemoryError) and torch.cuda.is_available():
                torch.cuda.empty_cache()  # give training its memory back before the next step
            outcome = (False, f"{type(e).__name__}: {e}")
            where = f"rank {self.group.rank}: " if self.group.world_size > 1 else ""
            log.info(f"predictions: {where}share of the round at step {step} failed: {outcome[1]}\n"
                     + "".join(traceback.format_exception(e, limit=-3)).rstrip())
        return self.group.all_gather(outcome)

    def _ready(self, step: int) -> tuple[bool, str | None]:
        try:
            self._maybe_fail(step)
        except Exception as e:  # noqa: BLE001 — exchanged before the lockstep, so no rank waits
            return False, f"{type(e).__name__}: {e}"
        return True, None

    def _maybe_fail(self, step: int) -> None:
        if self.test_fault == (self.group.rank, step):
            raise RuntimeError(f"{TEST_FAIL_RANK_VARIABLE} (a test hook) fails rank {self.group.rank} at step {step}")

    def _generate_share(self, model) -> list[tuple[int, Generation | SampleFailure]]:
        s = self.settings
        try:
            generations = generate_predictions(
                model,
                self.tokenizer,
                [x.prompt for x in self.share],
                max_new_tokens=s.max_new_tokens,
                do_sample=s.do_sample,
                temperature=s.temperature,
                top_p=s.top_p,
                seed=s.seed,
                batch_size=s.batch_size,
                isolate_failures=True,  # under lockstep only prompts that tokenise to nothing (no batch retry)
                synced=self.group.synced,
                calls=self.calls,
            )
        except Exception as e:
            if self.group.synced:
                raise SyncedGenerationFailed(
                    f"rank {self.group.rank}: {type(e).__name__}: {e} — the other ranks are waiting inside a "
                    "lockstep generate call this rank left, so the job stops rather than hang") from e
            raise
        return [(x.sample_index, g) for x, g in zip(self.share, generations, strict=True)]

    # -- the main process --------------------------------------------------------------------
    def _merge(self, shares: list[list[tuple[int, Generation | SampleFailure]]]) -> list[Generation | SampleFailure]:
        """The ranks' shares back in sample order; every sample exactly once."""
        by_index = dict(pair for share in shares for pair in share)
        assert sum(map(len, shares)) == len(by_index) == len(self.samples), "a sample came back twice or never"
        return [by_index[x.sample_index] for x in self.samples]

    def _rows(self, generations, step: int, epoch: float, model=None) -> tuple[list[dict[str, Any]], list[Scores], int]:
        s = self.settings
        rows, all_scores, failed = [], [], 0
        for sample, gen in zip(self.samples, generations, strict=True):
            if isinstance(gen, SampleFailure):
                failed += 1
                log.info(f"predictions: sample {sample.sample_index} failed to generate at step {step}: {gen.error}")
                rows.append(failed_row(job_id=self.job_id, user_id=self.user_id, epoch=epoch, step=step,
                                       sample=sample, failure=gen, settings=s))
                continue
            scores = score(gen.text, sample.ground_truth, json_parse=s.validators.json_parse,
                           json_schema=self.json_schema)
            if self.preference is not None:  # dpo / orpo: into the row's metrics (predictions/preference.py)
                scores.values.update(self.preference.scores(model, sample.sample_index))
            rows.append(make_row(job_id=self.job_id, user_id=self.user_id, epoch=epoch, step=step,
                                 sample=sample, generation=gen, scores=scores))
            all_scores.append(scores)  # the means are of the answers the model gave
        return rows, all_scores, failed

    def _write(self, rows: list[dict[str, Any]]) -> None:
        # The spool first: if it fails the round is failed (nothing would keep the rows), but the
        # remote writer still gets them — better one copy than none.
        try:
            self.local.write(rows)
        finally:
            if self.remote is not None:
                self.remote.submit(rows)

    def _record(self, result: RoundResult) -> None:
        """Append the attempt to the rounds log; a failure to do so is logged, never raised."""
        if self.rounds_log is None:
            return
        try:
            with Path(self.rounds_log).open("a", encoding="utf-8") as f:
                f.write(json.dumps(round_record(result, job_id=self.job_id, samples=len(self.samples))) + "\n")
        except OSError as e:
            log.info(f"predictions: could not append to {self.rounds_log.name}: {e}")


def failed_row(*, job_id: str, user_id: str | None, epoch: float, step: int, sample: Sample,
               failure: SampleFailure, settings: PredictionsConfig) -> dict[str, Any]:
    """The row of a sample that could not be generated: prediction '', no scores (make_row leaves
    them NULL, so the platform's averages are not dragged down by a non-answer), no stop reason,
    and why in `generation_error`."""
    nothing = Generation(text="", prompt_tokens=failure.prompt_tokens, completion_tokens=0, latency_ms=0.0,
                         stop_reason=None, max_new_tokens=settings.max_new_tokens, do_sample=settings.do_sample,
                         temperature=(settings.temperature or 1.0) if settings.do_sample else None,
                         top_p=(settings.top_p or 1.0) if settings.do_sample else None,  # as the generator records
                         error=failure.error)
    return make_row(job_id=job_id, user_id=user_id, epoch=epoch, step=step, sample=sample, generation=nothing,
                    scores=Scores())


def round_record(result: RoundResult, *, job_id: str, samples: int) -> dict[str, Any]:
    """One line of the rounds log (OUTPUT_DIR/prediction_rounds.jsonl). `samples`: the round's
    sample count (also for a failed round, which wrote none of them)."""
    # Microseconds: a round of a small model takes tens of milliseconds, and tokens_per_s (from the
    # unrounded time) must stay generated_tokens / seconds as the record reads (3 decimals drifted ~2 %).
    seconds = round(result.seconds, 6)
    return {
        "job_id": job_id,
        "step": result.step,
        "epoch": int(result.epoch),
        "epoch_progress": float(result.epoch),
        "status": "ok" if result.ok else "failed",
        "samples": samples,
        "failed_samples": result.failed_samples,
        "seconds": seconds,
        "generated_tokens": result.generated_tokens,
        "tokens_per_s": round(result.tokens_per_s, 2) if math.isfinite(result.tokens_per_s) else 0.0,
        "error": result.error,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def same_answer(generations: list) -> str | None:
    """The one answer every generated sample of a round gave (two samples or more), else None."""
    texts = {g.text for g in generations if isinstance(g, Generation)}
    answered = sum(isinstance(g, Generation) for g in generations)
    return next(iter(texts)) if answered > 1 and len(texts) == 1 else None
