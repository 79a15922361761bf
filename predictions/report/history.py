"""A job's predictions read back: per round figures, and each sample's history across rounds.

The same rows come from the local spool (OUTPUT_DIR/predictions.jsonl) or from the database
(predictions/report/sources.py); `build_history` turns them into what the report shows. Rows of older
versions of this image are read too: a fractional `epoch` becomes epoch + epoch_progress, a
boolean `exact_match` becomes 1.0 / 0.0 (see ROW SHAPE in predictions/store/rows.py).

A sample is *regressed* when it is worse at its last round than at its best: exactly right at
some round and not at the last ("lost"), or a char_error_rate at the last round worse than its best
by more than `threshold` ("cer"). A sample that dipped and came back is not regressed; its dips
stay in its history (`regressions`: every fall, round by round). The baseline round (step 0), when
there is one, is the reference the views compare every answer with.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from predictions.store.spool import JsonlObjects

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.2  # a CER 0.2 worse than the sample's best earlier CER is a regression
SCORES = ("exact_match", "char_error_rate", "word_overlap", "length_ratio")


def _float(value: Any) -> float | None:
    """A finite float, or None (NaN / inf / missing / not a number)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """A row in the current shape, whichever version of the image wrote it.

    epoch: int; epoch_progress: the fractional epoch (old rows: their float epoch); exact_match
    and the other scores: float or None; latency_ms: int or None; prediction: never None.
    """
    out = dict(row)
    raw_epoch = _float(row.get("epoch")) or 0.0
    progress = _float(row.get("epoch_progress"))
    out["epoch_progress"] = progress if progress is not None else raw_epoch
    out["epoch"] = int(raw_epoch)
    for name in (*SCORES, "temperature", "top_p"):
        out[name] = _float(row.get(name))
    latency = _float(row.get("latency_ms"))
    out["latency_ms"] = None if latency is None else int(round(latency))
    for name in ("step", "sample_index", "completion_tokens", "prompt_tokens"):
        value = row.get(name)
        out[name] = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    out["prediction"] = row.get("prediction") or ""
    out["generation_error"] = row.get("generation_error")
    return out


def read_jsonl(path: Path, *, quiet: bool = False) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; a torn last line (killed mid-write) or a bad line is
    skipped with a log line (none when `quiet`). An absent file reads as no rows."""
    if not path.exists():
        return []
    lines = JsonlObjects(path)
    rows = list(lines)
    for lineno in [] if quiet else lines.skipped:
        what = "the torn last line" if lines.torn(lineno) else "line"
        log.info(f"report: skipped {what} {lineno} of {path.name}: not a JSON object")
    return rows


def spool_rows(path: Path, job_id: str | None, *, quiet: bool = False) -> list[dict[str, Any]]:
    """The spool's rows of `job_id` (all jobs when None), normalised; a (step, sample_index)
    spooled twice (a restarted attempt) counts once, the first, as the database keeps it.
    Unreadable lines are logged, unless `quiet`."""
    seen: dict[tuple[int, int], dict[str, Any]] = {}
    for row in read_jsonl(path, quiet=quiet):
        if job_id is not None and row.get("job_id") != job_id:
            continue
        row = normalise(row)
        if row["step"] is None or row["sample_index"] is None:
            continue
        seen.setdefault((row["step"], row["sample_index"]), row)
    return list(seen.values())


@dataclass
class RoundFigures:
    """One round as the report shows it."""

    step: int
    epoch: int
    epoch_progress: float
    samples: int
    seconds: float | None
    tokens_per_s: float | None
    means: dict[str, float]  # exact_match, char_error_rate, word_overlap, length_ratio (non-null values)
    validation_pass_rate: float | None
    failed_samples: int
    same_answer: str | None = None  # the one answer every sample gave, when they all gave the same
    extra: dict[str, float] = field(default_factory=dict)  # means of the rows' `metrics` (extra scores)
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None


@dataclass
class Regression:
    kind: str  # "lost" (was exactly right, is not) | "cer" (CER worse than its best by > threshold) | "preference"
    from_step: int
    to_step: int
    detail: str


@dataclass
class SampleHistory:
    sample_index: int
    prompt: str
    ground_truth: str | None
    rows: dict[int, dict[str, Any]]  # step → row
    first_right: int | None = None  # the first step at which it was exactly right
    regressions: list[Regression] = field(default_factory=list)  # every fall, recovered or not
    worse_now: Regression | None = None  # its last round against its best one, when worse
    right_now: bool = False  # exactly right at its last answered round

    @property
    def regressed(self) -> bool:
        """Worse at its last round than at its best (a dip it recovered from is not)."""
        return self.worse_now is not None

    @property
    def ever_right(self) -> bool:
        return self.first_right is not None


@dataclass
class History:
    job_id: str | None
    source: str
    rounds: list[RoundFigures]
    samples: list[SampleHistory]
    threshold: float
    baseline_step: int | None  # 0 when there is a baseline round

    @property
    def steps(self) -> list[int]:
        """The steps of the rounds that have rows, in order."""
        return [r.step for r in self.rounds if r.status == "ok"]

    @property
    def failed_rounds(self) -> list[RoundFigures]:
        return [r for r in self.rounds if r.status == "failed"]

    @property
    def regressed(self) -> list[SampleHistory]:
        return [s for s in self.samples if s.regressed]


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _round_figures(step: int, rows: list[dict[str, Any]], logged: dict[str, Any] | None) -> RoundFigures:
    """Figures of one round from its rows; seconds and tokens/s from the rounds log when it has
    the round, else from the rows: latency_ms is the batch time shared among its samples, so a
    round's latencies add up to its generation time. A sample that failed to generate (its
    generation_error set, its prediction '') has no answer to score: it is counted, not averaged."""
    answered = [r for r in rows if not r.get("generation_error")]
    means = {name: m for name in SCORES if (m := _mean(r[name] for r in answered)) is not None}
    names = sorted({k for r in answered if isinstance(r.get("metrics"), dict) for k in r["metrics"]})
    extra = {k: m for k in names if (m := _mean(_float(r["metrics"].get(k)) for r in answered
                                                if isinstance(r.get("metrics"), dict))) is not None}
    validated = [r["validation_pass"] for r in answered if r.get("validation_pass") is not None]
    tokens = sum(r["completion_tokens"] or 0 for r in rows)
    latencies = [r["latency_ms"] for r in rows if r["latency_ms"] is not None]
    seconds = sum(latencies) / 1000 if latencies else None
    tokens_per_s = tokens / seconds if seconds else None
    if logged is not None:
        seconds = _float(logged.get("seconds")) if logged.get("seconds") is not None else seconds
        tokens_per_s = _float(logged.get("tokens_per_s")) if logged.get("tokens_per_s") is not None else tokens_per_s
    first = rows[0]
    answers = {r.get("prediction") for r in answered}
    return RoundFigures(
        same_answer=next(iter(answers)) if len(answered) > 1 and len(answers) == 1 else None,
        step=step, epoch=first["epoch"], epoch_progress=first["epoch_progress"], samples=len(rows),
        seconds=seconds, tokens_per_s=tokens_per_s, means=means, extra=extra,
        validation_pass_rate=sum(bool(v) for v in validated) / len(validated) if validated else None,
        failed_samples=sum(1 for r in rows if r.get("generation_error")),
    )


def _failed_round(entry: dict[str, Any]) -> RoundFigures:
    progress = _float(entry.get("epoch_progress")) or _float(entry.get("epoch")) or 0.0
    return RoundFigures(
        step=int(entry.get("step") or 0), epoch=int(_float(entry.get("epoch")) or 0), epoch_progress=progress,
        samples=0, seconds=_float(entry.get("seconds")), tokens_per_s=None, means={},
        validation_pass_rate=None, failed_samples=int(entry.get("samples") or 0),
        status="failed", error=entry.get("error") or "failed",
    )


def _regressions(sample: SampleHistory, steps: list[int], threshold: float) -> None:
    """Fill first_right and the regressions of one sample, walking its rounds in order."""
    best_cer: tuple[float, int] | None = None  # (best CER so far, its step)
    right_at: int | None = None  # the last step it was exactly right, while it still is
    cer_dropped = False  # flagged once per fall; flagged again only after it came back
    last_right: int | None = None  # the last step it was exactly right
    last: tuple[int, float | None, float | None] | None = None  # (step, exact match, CER) of its last answer
    for step in steps:
        row = sample.rows.get(step)
        if row is None or row.get("generation_error"):
            continue  # no answer this round: nothing to compare
        em, cer = row["exact_match"], row["char_error_rate"]
        last = (step, em, cer)
        if em == 1.0:
            if sample.first_right is None:
                sample.first_right = step
            right_at = last_right = step
        lost = em == 0.0 and right_at is not None
        if lost:
            sample.regressions.append(Regression("lost", right_at, step, "was exactly right, is not"))
            right_at = None
        if cer is None:
            continue
        if best_cer is not None and cer - best_cer[0] > threshold:
            if not cer_dropped and not lost:  # one fall, one flag: "lost" says it already
                sample.regressions.append(Regression(
                    "cer", best_cer[1], step, f"char error rate {best_cer[0]:.2f} → {cer:.2f}"))
            cer_dropped = True
        else:
            cer_dropped = False
        if best_cer is None or cer < best_cer[0]:
            best_cer = (cer, step)
    if last is None:
        return
    step, em, cer = last
    sample.right_now = em == 1.0
    if last_right is not None and em != 1.0:
        sample.worse_now = Regression("lost", last_right, step, f"exactly right at step {last_right}, not at the last round")
    elif cer is not None and best_cer is not None and cer - best_cer[0] > threshold:
        sample.worse_now = Regression("cer", best_cer[1], step, f"char error rate {best_cer[0]:.2f} at its best, "
                                      f"{cer:.2f} at the last round")


def _preference_regressions(sample: SampleHistory, steps: list[int]) -> None:
    """dpo / orpo rows (predictions/preference.py): a sample whose preference flips from correct
    (the chosen answer's implicit reward above the rejected one's) to wrong is a regression too."""
    correct_at = last_correct = last = None
    for step in steps:
        row = sample.rows.get(step)
        metrics = row.get("metrics") if row else None
        value = _float(metrics.get("preference_correct")) if isinstance(metrics, dict) else None
        if value is None:
            continue
        last = (step, value)
        if value == 1.0:
            correct_at = last_correct = step
        elif correct_at is not None:
            sample.regressions.append(Regression("preference", correct_at, step,
                                                 "preferred the chosen answer, now prefers the rejected one"))
            correct_at = None
    if last is not None and last[1] != 1.0 and last_correct is not None and sample.worse_now is None:
        # worse now than at its best: it preferred the chosen answer at last_correct, not at the end
        sample.worse_now = Regression("preference", last_correct, last[0],
                                      "preferred the chosen answer, now prefers the rejected one")


def build_history(
    rows: list[dict[str, Any]],
    rounds_log: list[dict[str, Any]] | None = None,
    *,
    job_id: str | None = None,
    source: str = "spool",
    threshold: float = DEFAULT_THRESHOLD,
) -> History:
    """Rounds and per-sample histories from normalised rows (and the rounds log, when present)."""
    by_step: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_step[row["step"]].append(row)
    logged: dict[int, dict[str, Any]] = {}
    failed: dict[int, dict[str, Any]] = {}
    for entry in rounds_log or ():
        if job_id is not None and entry.get("job_id") not in (None, job_id):
            continue
        step = entry.get("step")
        if not isinstance(step, int):
            continue
        if entry.get("status") == "failed":
            failed[step] = entry
        else:
            logged[step] = entry
    rounds = [_round_figures(step, sorted(rs, key=lambda r: r["sample_index"]), logged.get(step))
              for step, rs in by_step.items()]
    # A failed round that later succeeded (a restart redid it) is not a failed round any more.
    rounds += [_failed_round(e) for step, e in failed.items() if step not in by_step]
    rounds.sort(key=lambda r: (r.step, r.status != "failed"))
    steps = sorted(by_step)

    samples: dict[int, SampleHistory] = {}
    for step in steps:
        for row in by_step[step]:
            s = samples.get(row["sample_index"])
            if s is None:
                s = samples[row["sample_index"]] = SampleHistory(
                    row["sample_index"], row.get("prompt") or "", row.get("ground_truth"), {})
            s.rows[step] = row
    for s in samples.values():
        _regressions(s, steps, threshold)
        _preference_regressions(s, steps)
    return History(
        job_id=job_id, source=source, rounds=rounds, samples=[samples[i] for i in sorted(samples)],
        threshold=threshold, baseline_step=0 if 0 in by_step else None,
    )
