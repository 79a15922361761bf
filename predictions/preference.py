"""Preference scores of a prediction round (dpo, orpo): how the model ranks each sample's chosen
answer against its rejected one, with the method's own implicit reward.

Per sample, into the row's `metrics` (jsonb):
- `logp_chosen`, `logp_rejected`: the policy's summed log-probabilities of each answer (its tokens
  and the EOS) after the rendered prompt, tokenized as training tokenizes prompt and answer;
- `reward_margin`: DPO: β·((logp_c − ref_c) − (logp_r − ref_r)), the reference being the starting
  model (its log-probs computed once, before training); ORPO: the log-odds ratio of the two answers'
  mean per-token probabilities, log(p_c/(1−p_c)) − log(p_r/(1−p_r)), as TRL's ORPO loss uses it;
- `preference_correct`: 1.0 when the margin is > 0, else 0.0.
A round's means add `reward_margin` and `preference_accuracy`. Plain functions of a model: tested
without a Trainer (tests/test_preference.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: The keys each preference sample adds to its row's `metrics`.
PREFERENCE_METRICS = ("logp_chosen", "logp_rejected", "reward_margin", "preference_correct")


@dataclass(frozen=True)
class Pair:
    prompt: str  # rendered, as generation sees it
    chosen: str
    rejected: str


def answer_logps(model, tokenizer, prompt: str, answer: str) -> tuple[float, int]:
    """(summed log-probability of `answer` + EOS after `prompt`, its token count)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    answer_ids = tokenizer(answer, add_special_tokens=False).input_ids
    if tokenizer.eos_token_id is not None:
        answer_ids = answer_ids + [tokenizer.eos_token_id]
    import torch  # here: the report reads these modules' figures without torch

    device = next(model.parameters()).device
    ids = torch.tensor([prompt_ids + answer_ids], device=device)
    logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1].float()
    logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, len(prompt_ids):, None]).squeeze(-1)
    return float(logps.sum()), len(answer_ids)


def _log_odds(mean_logp: float) -> float:
    """log(p / (1 − p)) for p = exp(mean_logp) < 1 (log1p keeps it finite near p = 1)."""
    return mean_logp - math.log(-math.expm1(min(mean_logp, -1e-7)))


@dataclass
class PreferenceScorer:
    """The preference scores of a fixed sample (sample_index → Pair) under `method` ("dpo" / "orpo")."""

    pairs: dict[int, Pair]
    tokenizer: object
    method: str
    beta: float
    reference: dict[int, tuple[float, float]] = field(default_factory=dict)  # DPO: the starting model's logps

    def _logps(self, model, pair: Pair) -> tuple[tuple[float, int], tuple[float, int]]:
        import torch

        with torch.no_grad():
            return (answer_logps(model, self.tokenizer, pair.prompt, pair.chosen),
                    answer_logps(model, self.tokenizer, pair.prompt, pair.rejected))

    def set_reference(self, model) -> None:
        """DPO's reference: the starting model's log-probs (computed once, before training)."""
        if self.method != "dpo":
            return
        was_training = model.training
        model.eval()
        try:
            for index, pair in self.pairs.items():
                (c, _), (r, _) = self._logps(model, pair)
                self.reference[index] = (c, r)
        finally:
            model.train(was_training)

    def scores(self, model, sample_index: int) -> dict[str, float]:
        """The sample's preference metrics under `model` (in eval mode: no dropout)."""
        pair = self.pairs[sample_index]
        was_training = model.training
        model.eval()
        try:
            (c, n_c), (r, n_r) = self._logps(model, pair)
        finally:
            model.train(was_training)
        if self.method == "dpo":
            ref_c, ref_r = self.reference[sample_index]
            margin = self.beta * ((c - ref_c) - (r - ref_r))
        else:
            margin = _log_odds(c / n_c) - _log_odds(r / n_r)
        return {"logp_chosen": c, "logp_rejected": r, "reward_margin": margin,
                "preference_correct": 1.0 if margin > 0 else 0.0}


def preference_means(values: list[dict[str, float]]) -> dict[str, float]:
    """A round's mean reward margin and preference accuracy (empty when no sample has them)."""
    scored = [v for v in values if "reward_margin" in v]
    if not scored:
        return {}
    return {"reward_margin": sum(v["reward_margin"] for v in scored) / len(scored),
            "preference_accuracy": sum(v["preference_correct"] for v in scored) / len(scored)}


def preference_columns(means: dict[str, float]) -> list[tuple[str, str]]:
    """(header, cell) of a round's preference means for the rounds table ("-" when it has none)."""
    margin, accuracy = means.get("reward_margin"), means.get("preference_accuracy")
    return [("margin", "-" if margin is None else f"{margin:+.3f}"),
            ("pref. acc.", "-" if accuracy is None else f"{accuracy:.0%}")]
