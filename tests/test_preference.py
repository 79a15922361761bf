"""predictions/preference.py: the preference scores of a round against a hand computation on a tiny
model, and a preference that flips from correct to wrong counted as a regression in the report."""

from __future__ import annotations

import math

import pytest
import torch

from predictions.report.history import build_history, normalise
from trainer.demo import WORDS, build_model, build_tokenizer


def _tiny():
    tok = build_tokenizer([" ".join(WORDS), "reverse:"])
    return tok, build_model(tok, hidden_size=32, layers=2, heads=2).eval()


def _hand_logp(model, tok, prompt: str, answer: str) -> float:
    """Summed log-probability of answer + EOS after prompt, one token at a time."""
    p = tok(prompt, add_special_tokens=False).input_ids
    a = tok(answer, add_special_tokens=False).input_ids + [tok.eos_token_id]
    total = 0.0
    with torch.no_grad():
        for i, token in enumerate(a):
            logits = model(input_ids=torch.tensor([p + a[:i]])).logits[0, -1]
            total += float(torch.log_softmax(logits, -1)[token])
    return total


def test_preference_scores_match_a_hand_computation():
    from predictions.preference import Pair, PreferenceScorer

    tok, model = _tiny()
    pair = Pair("reverse: red cat", "cat red", "red cat")
    c, r = _hand_logp(model, tok, pair.prompt, pair.chosen), _hand_logp(model, tok, pair.prompt, pair.rejected)
    dpo = PreferenceScorer({0: pair}, tok, "dpo", beta=0.5)
    dpo.set_reference(model)
    with torch.no_grad():  # a step away from the reference
        model.lm_head.weight[tok.convert_tokens_to_ids("cat")] += 0.5
    c2, r2 = _hand_logp(model, tok, pair.prompt, pair.chosen), _hand_logp(model, tok, pair.prompt, pair.rejected)
    got = dpo.scores(model, 0)
    assert got["logp_chosen"] == pytest.approx(c2, abs=1e-4) and got["logp_rejected"] == pytest.approx(r2, abs=1e-4)
    assert got["reward_margin"] == pytest.approx(0.5 * ((c2 - c) - (r2 - r)), abs=1e-4)
    assert got["preference_correct"] == float(got["reward_margin"] > 0)
    orpo = PreferenceScorer({0: pair}, tok, "orpo", beta=0.1).scores(model, 0)
    n = len(tok("cat red", add_special_tokens=False).input_ids) + 1

    def odds(mean):
        return mean - math.log(1 - math.exp(mean))

    assert orpo["reward_margin"] == pytest.approx(odds(c2 / n) - odds(r2 / n), abs=1e-4)




def test_a_preference_that_flips_from_correct_to_wrong_is_a_regression():
    def row(step, index, correct, margin):
        return normalise({"job_id": "j", "step": step, "epoch": 0, "sample_index": index, "prompt": "p",
                          "ground_truth": "a", "prediction": "b", "exact_match": 0.0, "char_error_rate": 1.0,
                          "metrics": {"reward_margin": margin, "preference_correct": correct}})

    rows = [row(0, 0, 0.0, 0.0), row(4, 0, 1.0, 0.3), row(8, 0, 0.0, -0.1),  # right, then wrong: regressed
            row(0, 1, 0.0, 0.0), row(4, 1, 1.0, 0.2), row(8, 1, 1.0, 0.4)]   # stays right
    history = build_history(rows, job_id="j")
    assert [s.sample_index for s in history.regressed] == [0]
    g = history.samples[0].regressions[0]
    assert (g.kind, g.from_step, g.to_step) == ("preference", 4, 8)
    last = history.rounds[-1]
    assert last.extra["preference_correct"] == 0.5 and last.extra["reward_margin"] == pytest.approx(0.15)
