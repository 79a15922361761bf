"""The report in a terminal (rich, 80 columns) and as one self-contained HTML file (jinja2).

Both views take a History (predictions/report/history.py); neither reads a file or a database.
"""

from __future__ import annotations

import difflib
from datetime import datetime, timezone
from pathlib import Path

from markupsafe import Markup, escape
from rich.console import Console
from rich.table import Table
from rich.text import Text

from predictions.report.history import History, SampleHistory

TEMPLATES = Path(__file__).parent / "templates"
CUT = "…"
#: HTML size bounds, so a 500 samples × 100 rounds job stays a page of a few MB: each shown
#: answer is cut to MAX_HTML_CHARS, and a sample lists at most MAX_CHANGES answer changes (its
#: first, its regressions, its first right answer and its last are always among them).
MAX_HTML_CHARS = 600
MAX_CHANGES = 24
OPEN_SAMPLES = 20  # regressed samples shown expanded; the others are one click away
PAGE_SAMPLES = 50  # samples per page in the HTML (paged by its script)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _num(value: float | None, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def cut(text: str | None, width: int) -> str:
    """One line of at most `width` characters, cut with a mark."""
    text = (text or "").replace("\n", "⏎ ")
    return text if len(text) <= width else text[: max(0, width - 1)] + CUT


# -- terminal -----------------------------------------------------------------------------------

def rounds_table(history: History) -> Table:
    """Step, epoch, samples, seconds, tokens/s, mean scores, validation pass rate, status."""
    table = Table(title="prediction rounds", title_justify="left", pad_edge=False, padding=(0, 1))
    for name in ("step", "epoch", "n", "sec", "tok/s", "exact", "CER", "overlap", "valid", "status"):
        table.add_column(name, justify="left" if name == "status" else "right", no_wrap=True)
    for r in history.rounds:
        m = r.means
        table.add_row(
            str(r.step), f"{r.epoch_progress:.2f}", str(r.samples), _num(r.seconds, ".1f"),
            _num(r.tokens_per_s, ".0f"), _pct(m.get("exact_match")), _num(m.get("char_error_rate")),
            _num(m.get("word_overlap")), _pct(r.validation_pass_rate),
            "ok" if r.status == "ok" and not r.failed_samples else
            (f"{r.failed_samples} err" if r.status == "ok" else "FAILED"),
        )
    return table


def _flags(s: SampleHistory) -> str:
    """Short, the sample's state at its last round: "▼ lost, right@40" (worse than its best),
    "✓ right", "never right", or "" (wrong, and never better)."""
    if s.regressed:
        w = s.worse_now
        return f"▼ {w.kind}, best@{w.from_step}" if w.kind == "cer" else f"▼ lost, right@{w.from_step}"
    if s.right_now:
        return "✓ right" + (" (dipped)" if s.regressions else "")
    return "" if s.ever_right else "never right"


PROMPT_CHARS = 300  # a prompt's end (where the question is) in the terminal; answers are whole


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else CUT + text[-limit:]


def samples_table(history: History) -> Table:
    """One block per sample: its prompt (its end), ground truth, baseline (or first) answer and last
    answer, whole and wrapped; the first step it was right, and its state at the last round."""
    steps = history.steps
    first, last = (steps[0], steps[-1]) if steps else (None, None)
    table = Table(title="samples (▼ regressed: worse at the last round than at its best)", title_justify="left",
                  pad_edge=False, padding=(0, 1), expand=True, show_lines=True)
    table.add_column("#", justify="right", no_wrap=True, min_width=2)
    table.add_column("prompt, ground truth and answers", ratio=1, overflow="fold")
    table.add_column("right at", justify="right", no_wrap=True, min_width=5)
    table.add_column("at the end", no_wrap=True, min_width=11)
    first_name = "baseline" if history.baseline_step == 0 else f"step {first}"
    for s in history.samples:
        lines = [Text("prompt: ", style="dim") + Text(_tail(s.prompt, PROMPT_CHARS)),
                 Text("truth: ", style="dim") + Text(s.ground_truth or "-")]
        for name, step in ((first_name, first), (f"step {last}", last)):
            if step in s.rows and (first != last or name == first_name):
                lines.append(Text(f"{name}: ", style="dim") + Text(s.rows[step]["prediction"] or "''"))
        table.add_row(str(s.sample_index), Text("\n").join(lines),
                      "-" if s.first_right is None else str(s.first_right), _flags(s))
    return table


def sample_rounds_table(history: History, s: SampleHistory) -> Table:
    """One sample's answers round by round (whole, wrapped), next to its ground truth."""
    table = Table(title=f"sample {s.sample_index}: {cut(s.ground_truth, 50)}", title_justify="left", expand=True,
                  pad_edge=False, padding=(0, 1))
    table.add_column("step", justify="right", no_wrap=True)
    table.add_column("answer", ratio=1, overflow="fold")
    table.add_column("exact", justify="right", no_wrap=True)
    table.add_column("CER", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True, min_width=7)
    marks = {g.to_step: "▼ " + g.kind for g in s.regressions}
    for step in history.steps:
        row = s.rows.get(step)
        if row is None:
            continue
        text = f"error: {row['generation_error']}" if row.get("generation_error") else row["prediction"]
        table.add_row(str(step), Text(text), _pct(row["exact_match"]), _num(row["char_error_rate"], ".2f"),
                      marks.get(step, "✓ right" if step == s.first_right else ""))
    return table


def same_answer_lines(history: History) -> list[str]:
    """One line per round in which every sample got the same answer."""
    return [f"step {r.step}: every sample got the same answer ({cut(r.same_answer, 40)!r})"
            for r in history.rounds if r.same_answer is not None]


def print_history(history: History, console: Console | None = None, *, detail: int = 10) -> None:
    """The terminal report: rounds, the summary, every sample, and the history of up to `detail`
    regressed samples round by round."""
    console = console or Console()
    console.print(rounds_table(history))
    for r in history.failed_rounds:
        console.print(f"failed round at step {r.step}: {cut(r.error, 60)}")
    for line in same_answer_lines(history):
        console.print(line, markup=False)
    console.print(summary_line(history))
    if not history.samples:
        return
    console.print(samples_table(history))
    for s in history.regressed[:detail]:
        console.print(sample_rounds_table(history, s))
    more = len(history.regressed) - detail
    if more > 0:
        console.print(f"… and {more} more regressed samples (see the HTML report)")


def summary_line(history: History) -> str:
    ok = [r for r in history.rounds if r.status == "ok"]
    last = history.steps[-1] if history.steps else None
    right_last = sum(1 for s in history.samples if last in s.rows and s.rows[last]["exact_match"] == 1.0)
    return (f"{history.job_id or 'all jobs'} ({history.source}): {len(ok)} rounds, {len(history.failed_rounds)} failed; "
            f"{len(history.samples)} samples: {right_last} right at the last round, "
            f"{sum(s.ever_right for s in history.samples)} ever right, "
            f"{len(history.regressed)} regressed (worse at the last round than at their best; CER threshold "
            f"{history.threshold:g})")


# -- HTML ---------------------------------------------------------------------------------------

def char_diff(before: str, after: str) -> Markup:
    """`after` with what changed since `before` marked: <del> removed, <ins> added (difflib)."""
    out = []
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            out.append(escape(after[b0:b1]))
            continue
        if a1 > a0:
            out.append(Markup("<del>{}</del>").format(before[a0:a1]))
        if b1 > b0:
            out.append(Markup("<ins>{}</ins>").format(after[b0:b1]))
    return Markup("").join(out)


def _changes(history: History, s: SampleHistory) -> tuple[list[dict], int]:
    """The sample's answer changes: consecutive rounds with the same answer are one entry, each
    entry diffed against the one shown above it. At most MAX_CHANGES (always the first, the last,
    and those around a regression or the first right answer); returns them and the count left out."""
    runs: list[dict] = []
    for step in history.steps:
        row = s.rows.get(step)
        if row is None:
            continue
        text = row["prediction"][:MAX_HTML_CHARS]
        key = (text, row["exact_match"], bool(row.get("generation_error")))
        if runs and runs[-1]["key"] == key:
            runs[-1]["last"] = step
            continue
        runs.append({"key": key, "first": step, "last": step, "text": text, "row": row})
    keep = {0, len(runs) - 1}
    marks = {g.to_step for g in s.regressions} | {g.from_step for g in s.regressions} | {s.first_right}
    keep |= {i for i, r in enumerate(runs) if any(m is not None and r["first"] <= m <= r["last"] for m in marks)}
    for i in range(len(runs)):
        if len(keep) >= MAX_CHANGES:
            break
        keep.add(i)
    shown, previous = [], None
    regressed_at = {g.to_step: g for g in s.regressions}
    for i in sorted(keep):
        run, row = runs[i], runs[i]["row"]
        before = None if previous is None else runs[previous]["text"]  # the answer shown above it
        shown.append({
            "steps": str(run["first"]) if run["first"] == run["last"] else f"{run['first']}–{run['last']}",
            "gap": previous is not None and i != previous + 1,
            "exact": row["exact_match"], "cer": row["char_error_rate"],
            "error": row.get("generation_error"),
            "html": escape(run["text"]) if before is None else char_diff(before, run["text"]),
            "regression": regressed_at.get(run["first"]),
            "first_right": run["first"] == s.first_right,
        })
        previous = i
    return shown, len(runs) - len(shown)


def _chart(history: History, width: int = 720, height: int = 220) -> dict:
    """Polylines of the round means across steps, in SVG coordinates (y: 0 at the bottom, 1 at the top)."""
    left, right, top, bottom = 40, 10, 10, 30
    ok = [r for r in history.rounds if r.status == "ok"]
    steps = [r.step for r in history.rounds] or [0]
    lo, hi = min(steps), max(steps)
    x = lambda step: left + (step - lo) / ((hi - lo) or 1) * (width - left - right)  # noqa: E731
    y = lambda v: top + (1 - min(max(v, 0.0), 1.0)) * (height - top - bottom)  # noqa: E731
    names = {"exact_match": ("exact match", "#2a7"), "char_error_rate": ("char error rate", "#d33"),
             "word_overlap": ("word overlap", "#36c")}
    series = []
    for key, (label, color) in names.items():
        pts = [(x(r.step), y(r.means[key])) for r in ok if key in r.means]
        series.append({"label": label, "color": color, "points": " ".join(f"{a:.1f},{b:.1f}" for a, b in pts),
                       "dots": pts if len(pts) <= 60 else []})
    validated = [(x(r.step), y(r.validation_pass_rate)) for r in ok if r.validation_pass_rate is not None]
    if validated:
        series.append({"label": "validation pass", "color": "#a5c", "dots": validated if len(validated) <= 60 else [],
                       "points": " ".join(f"{a:.1f},{b:.1f}" for a, b in validated)})
    return {"width": width, "height": height, "series": series, "left": left, "right": width - right,
            "top": top, "bottom": height - bottom, "mid": y(0.5), "lo": lo, "hi": hi,
            "failed": [x(r.step) for r in history.failed_rounds]}


def render_html(history: History) -> str:
    """The whole report as one HTML page: no external asset, no network."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    env.filters["pct"] = _pct
    env.filters["num"] = _num
    samples, open_left = [], OPEN_SAMPLES
    for s in history.samples:
        changes, hidden = _changes(history, s)
        opened = s.regressed and open_left > 0
        open_left -= opened
        last = s.rows[max(s.rows)] if s.rows else None
        samples.append({"s": s, "changes": changes, "hidden": hidden, "open": opened, "last": last,
                        "baseline": s.rows.get(0) if history.baseline_step == 0 else None,
                        "prompt": s.prompt[-MAX_HTML_CHARS:], "truth": (s.ground_truth or "")[:MAX_HTML_CHARS]})
    return env.get_template("report.html.j2").render(
        h=history, summary=summary_line(history), chart=_chart(history), samples=samples,
        extra=sorted({k for r in history.rounds for k in r.extra}),
        page_size=PAGE_SAMPLES, created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_html(history: History, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(history), encoding="utf-8", errors="replace")  # a lone surrogate becomes "?"
    return path
