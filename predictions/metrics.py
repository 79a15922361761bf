"""The scores of a prediction: each one a function, registered once.

A metric takes the prediction and the ground truth, both already cleaned the platform's way
(stripped, lower-cased), and returns a finite float. Registering it is all a new metric needs:
the row (predictions/store/rows.py) stores the platform's four metrics in their own columns and every
other one in the `metrics` jsonb column (so a new metric needs no migration), and the round's
means and the closing summary iterate over REGISTRY.

    @metric("word_f1", label="word F1")
    def word_f1(prediction: str, truth: str) -> float: ...

The four column metrics copy the platform's own scorer (lib/training/predictions_scorer.py of
the platform) so an old job's rows and a new job's rows mean the same in its UI.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable

#: Edit distance looks at the first 10k characters of each text. That bounds its cost at about
#: 0.1 s a row (bit-parallel, below); a plain two-row DP would take ~50 s at this size.
MAX_EDIT_CHARS = 10_000

#: The platform's score columns: these metrics have a column of their own in training_predictions.
PLATFORM_METRICS = ("exact_match", "char_error_rate", "length_ratio", "word_overlap")


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[str, str], float]
    label: str  # the closing summary's column header
    percent: bool  # shown as a percentage (a rate), else with three decimals

    @property
    def column(self) -> bool:
        """True when the metric has its own column; False: it goes into the `metrics` jsonb."""
        return self.name in PLATFORM_METRICS


#: name → Metric, in registration order (the summary's column order).
REGISTRY: dict[str, Metric] = {}


def metric(name: str, *, label: str | None = None, percent: bool = False):
    """Register `fn(prediction, truth) -> float` under `name` (a decorator). Names are unique."""

    def register(fn: Callable[[str, str], float]) -> Callable[[str, str], float]:
        if name in REGISTRY:
            raise ValueError(f"metric {name!r} is registered twice")
        REGISTRY[name] = Metric(name, fn, label or name.replace("_", " "), percent)
        return fn

    return register


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute; one code point each).

    Myers' bit-vector algorithm (Hyyrö's formulation): one column of the DP table is packed into
    Python ints, so each character of the longer text costs a dozen big-int operations instead of
    a Python loop over the shorter one — O(n·m/64) machine work instead of O(n·m) interpreter steps.
    A dependency (rapidfuzz) would do the same; this is 20 lines, checked against the plain DP in
    tests/test_scorer.py.
    """
    # The common prefix and suffix cost nothing; near-miss answers shrink to their differences.
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    a, b = a[start:], b[start:]
    while a and b and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    match: dict[str, int] = {}  # for each character, the bit set of its positions in b
    for i, c in enumerate(b):
        match[c] = match.get(c, 0) | (1 << i)
    full, last = (1 << m) - 1, 1 << (m - 1)
    plus, minus, distance = full, 0, m  # vertical deltas +1 / -1 of the current column; its last cell
    for c in a:
        eq = match.get(c, 0)
        xv = eq | minus
        xh = (((eq & plus) + plus) ^ plus) | eq
        h_plus = minus | ~(xh | plus)
        h_minus = plus & xh
        if h_plus & last:
            distance += 1
        elif h_minus & last:
            distance -= 1
        h_plus = (h_plus << 1) | 1
        h_minus <<= 1
        plus = (h_minus | ~(xv | h_plus)) & full
        minus = h_plus & xv
    return distance


# -- the platform's four (texts arrive stripped and lower-cased) ----------------------------------

@metric("exact_match", label="exact match", percent=True)
def exact_match(prediction: str, truth: str) -> float:
    """1.0 when the cleaned texts are equal, else 0.0 (the platform's column comment)."""
    return 1.0 if prediction == truth else 0.0


@metric("char_error_rate", label="char error")
def char_error_rate(prediction: str, truth: str) -> float:
    """Edit distance / length of the truth, clamped to 1.0 as the platform's UI expects."""
    p, t = prediction[:MAX_EDIT_CHARS], truth[:MAX_EDIT_CHARS]
    return min(1.0, levenshtein(p, t) / max(len(t), 1))


@metric("length_ratio", label="length ratio")
def length_ratio(prediction: str, truth: str) -> float:
    """len(prediction) / len(truth); 0.0 for a truth that is only whitespace (the platform's rule)."""
    return len(prediction) / len(truth) if truth else 0.0


@metric("word_overlap", label="word overlap")
def word_overlap(prediction: str, truth: str) -> float:
    """The share of the prediction's distinct words found in the truth; 0.0 for an empty prediction."""
    predicted, true = set(prediction.split()), set(truth.split())
    return len(predicted & true) / len(predicted) if predicted else 0.0


# -- this image's extras: stored in the `metrics` jsonb column ------------------------------------

@metric("word_f1", label="word F1")
def word_f1(prediction: str, truth: str) -> float:
    """F1 of the bags of words (counts matter, unlike word_overlap); 1.0 when both are empty."""
    p, t = Counter(prediction.split()), Counter(truth.split())
    if not p and not t:
        return 1.0
    common = sum((p & t).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(p.values()), common / sum(t.values())
    return 2 * precision * recall / (precision + recall)


def summary_columns(means: dict[str, float]) -> list[tuple[str, str]]:
    """(header, cell) for every registered metric: the closing summary's score columns. A metric
    the round has no mean for (no ground truth, a failed round) shows "-"."""
    cells = []
    for name, m in REGISTRY.items():
        value = means.get(name)
        cell = "-" if value is None else f"{value:.0%}" if m.percent else f"{value:.3f}"
        cells.append((m.label, cell))
    return cells
