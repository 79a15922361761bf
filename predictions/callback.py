"""The Trainer callback: it decides *when* a prediction round runs, nothing else.

Frequencies: "eval" (after each evaluation), "epoch" (at each epoch end), "steps" (every
step_interval optimizer steps); plus an optional baseline round before the first step. Rounds are
keyed by the global step, so two rounds never share a key and a step is never predicted twice
(an epoch end and an evaluation at the same step make one round).

Every rank calls the round at the same step: a round is collective (each rank generates its
share, the main process alone writes; see predictions/rounds.py), so every rank must also skip the
same rounds — `done_steps` is the same set on every rank.
"""

from __future__ import annotations

from typing import Callable

from transformers import TrainerCallback

Frequency = str  # "eval" | "epoch" | "steps"


class PredictionsCallback(TrainerCallback):
    def __init__(
        self,
        run_round: Callable[..., object],
        *,
        frequency: Frequency,
        step_interval: int | None = None,
        baseline: bool = False,
        done_steps: set[int] | None = None,
    ):
        """`run_round(model, step=, epoch=)` does the work and never raises (PredictionRounds.run);
        it is called on every rank. `done_steps`: steps already predicted by an earlier attempt of
        this job (a restart); the same set on every rank, since a skipped round skips its
        collectives too."""
        if frequency not in ("eval", "epoch", "steps"):
            raise ValueError(f'frequency must be "eval", "epoch" or "steps", got {frequency!r}')
        if frequency == "steps" and not (step_interval and step_interval > 0):
            raise ValueError('frequency "steps" needs a positive step_interval')
        self.run_round, self.frequency, self.step_interval = run_round, frequency, step_interval
        self.baseline = baseline
        self.done_steps: set[int] = set(done_steps or ())

    # -- events ------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.baseline and state.global_step == 0:
            self._round(model, state, step=0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.frequency == "steps" and state.global_step % self.step_interval == 0:
            self._round(model, state)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.frequency == "epoch":
            self._round(model, state)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if self.frequency == "eval":
            self._round(model, state)

    # -----------------------------------------------------------------------------------------
    def _round(self, model, state, step: int | None = None) -> None:
        step = state.global_step if step is None else step
        if step in self.done_steps:  # twice for one step (restart, or epoch end == eval step)
            return
        self.done_steps.add(step)
        self.run_round(model, step=step, epoch=float(state.epoch or 0.0))
