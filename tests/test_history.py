"""predictions/report/history.py and view.py on spools built by hand: the row shape of this
version (integer epoch + epoch_progress, exact_match 1.0/0.0, integer latency) and the old one
(float epoch, boolean exact_match), a failed round in the rounds log, a torn last line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from predictions.report.history import build_history, normalise, spool_rows
from predictions.report.view import print_history, render_html

JOB = "job-1"


def new_row(step: int, i: int, prediction: str, truth: str, *, cer: float | None = None, tokens: int = 4,
            latency_ms: int = 250, error: str | None = None, epoch_progress: float | None = None) -> dict:
    """A row in the shared contract's shape (ROW SHAPE)."""
    right = prediction == truth
    progress = step / 100 if epoch_progress is None else epoch_progress
    return {
        "id": f"00000000-0000-4000-8000-{step:06d}{i:06d}", "job_id": JOB, "user_id": None,
        "epoch": int(progress), "epoch_progress": progress, "step": step, "sample_index": i,
        "prompt": f"reverse: {truth}", "ground_truth": truth, "prediction": prediction,
        "exact_match": 1.0 if right else 0.0,
        "char_error_rate": (0.0 if right else 1.0) if cer is None else cer,
        "length_ratio": 1.0, "word_overlap": 1.0 if right else 0.0, "completion_tokens": tokens,
        "latency_ms": latency_ms, "validation_pass": None, "sample_source": "dataset",
        "metrics": {"word_f1": 1.0 if right else 0.0}, "generation_error": error,
    }


def write_spool(path: Path, rows: list[dict], torn: str | None = None) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text + (torn or ""))
    return path


def scenario() -> list[dict]:
    """Three samples over steps 0 (baseline), 10, 20, 30:
    0 becomes right at 10 and stays; 1 is right at 10 and lost at 20 (regressed); 2 never right,
    and its CER falls from 0.3 to 0.8 at 30 (regressed by CER)."""
    rows = []
    for step in (0, 10, 20, 30):
        rows.append(new_row(step, 0, "a b c" if step else "x", "a b c"))
        rows.append(new_row(step, 1, "d e" if step == 10 else "d", "d e"))
        rows.append(new_row(step, 2, "zz", "f g", cer={0: 0.9, 10: 0.5, 20: 0.3, 30: 0.8}[step]))
    return rows


def test_regressions_first_right_and_round_figures(tmp_path):
    spool = write_spool(tmp_path / "predictions.jsonl", scenario())
    h = build_history(spool_rows(spool, JOB), job_id=JOB)
    assert h.steps == [0, 10, 20, 30] and h.baseline_step == 0
    s0, s1, s2 = h.samples
    assert (s0.first_right, s0.regressed) == (10, False)
    assert s1.first_right == 10 and [(g.kind, g.from_step, g.to_step) for g in s1.regressions] == [("lost", 10, 20)]
    assert s2.first_right is None and [(g.kind, g.from_step, g.to_step) for g in s2.regressions] == [("cer", 20, 30)]
    r10 = h.rounds[1]
    assert r10.samples == 3 and r10.means["exact_match"] == pytest.approx(2 / 3)
    # No rounds log: a round's seconds are its samples' latencies added up, tokens/s follows.
    assert r10.seconds == pytest.approx(0.75) and r10.tokens_per_s == pytest.approx(12 / 0.75)
    # A higher threshold does not see the CER fall of sample 2.
    assert not build_history(spool_rows(spool, JOB), job_id=JOB, threshold=0.6).samples[2].regressed


def test_the_rounds_log_gives_time_tokens_and_the_failed_round(tmp_path, caplog):
    rows = [r for r in scenario() if r["step"] != 20]
    spool = write_spool(tmp_path / "predictions.jsonl", rows, torn='{"job_id": "job-1", "step": 40, "sampl')
    log = [
        {"job_id": JOB, "step": 10, "epoch": 0, "epoch_progress": 0.1, "status": "ok", "samples": 3,
         "failed_samples": 0, "seconds": 2.0, "generated_tokens": 12, "tokens_per_s": 6.0, "error": None,
         "time": "2026-11-30T21:00:00Z"},
        {"job_id": JOB, "step": 20, "epoch": 0, "epoch_progress": 0.2, "status": "failed", "samples": 3,
         "failed_samples": 3, "seconds": 0.5, "generated_tokens": 0, "tokens_per_s": 0.0,
         "error": "OutOfMemoryError: CUDA out of memory", "time": "2026-11-30T21:01:00Z"},
    ]
    h = build_history(spool_rows(spool, JOB), log, job_id=JOB)
    assert any("torn last line" in n for n in caplog.messages)
    assert [(r.step, r.status) for r in h.rounds] == [(0, "ok"), (10, "ok"), (20, "failed"), (30, "ok")]
    assert h.rounds[1].seconds == 2.0 and h.rounds[1].tokens_per_s == 6.0
    assert "OutOfMemoryError" in h.failed_rounds[0].error
    out = Console(width=80, record=True)
    print_history(h, out)
    text = out.export_text()
    assert "FAILED" in text and "failed round at step 20: OutOfMemoryError" in text


def test_a_sample_that_failed_to_generate_is_counted_not_scored():
    rows = scenario()
    rows.append(new_row(30, 3, "", "h i", error="RuntimeError: NaN logits"))
    h = build_history(rows, job_id=JOB)
    last = h.rounds[-1]
    assert last.samples == 4 and last.failed_samples == 1
    assert last.means["exact_match"] == pytest.approx(1 / 3)  # samples 0..2 only
    assert not h.samples[3].regressed and not h.samples[3].ever_right


def test_old_rows_are_read_in_the_new_shape():
    old = {"job_id": JOB, "epoch": 1.75, "step": 70, "sample_index": 0, "prediction": None, "exact_match": True,
           "char_error_rate": float("nan"), "latency_ms": 12.6, "completion_tokens": 3}
    row = normalise(old)
    assert (row["epoch"], row["epoch_progress"], row["exact_match"]) == (1, 1.75, 1.0)
    assert row["latency_ms"] == 13 and row["char_error_rate"] is None and row["prediction"] == ""


def test_the_terminal_view_fits_80_columns_and_cuts_long_texts(tmp_path):
    rows = scenario()
    rows[0]["ground_truth"] = "word " * 60
    rows.append(new_row(30, 3, "y" * 500, "long answer " * 20, error=None))
    h = build_history(rows, job_id=JOB)
    out = Console(width=80, record=True)
    print_history(h, out)
    text = out.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = "".join(text.replace("│", "").split())  # answers are whole, wrapped over lines
    assert "y" * 500 in flat and "word" * 60 in flat and "prompt:reverse:longanswer" in flat
    assert "▼ lost, right@10" in text and "never right" in text and "✓ right" in text
    assert "3 regressed" not in text and "2 regressed" in text


def test_regressed_means_worse_at_the_last_round_than_at_its_best():
    """A sample that dipped and came back is not regressed (its dip stays in its history); one
    that was right and is wrong at the end is, and so is a CER worse at the end than its best."""
    rows = []
    for step in (0, 10, 20, 30):
        rows.append(new_row(step, 0, "a b" if step in (10, 30) else "a", "a b"))  # right, dips, right again
        rows.append(new_row(step, 1, "c d" if step == 20 else "c", "c d"))  # right at 20, wrong at 30
        rows.append(new_row(step, 2, "zz", "e f", cer={0: 0.9, 10: 0.3, 20: 0.9, 30: 0.35}[step]))  # recovered CER
    h = build_history(rows, job_id=JOB)
    s0, s1, s2 = h.samples
    assert not s0.regressed and s0.right_now and [(g.kind, g.to_step) for g in s0.regressions] == [("lost", 20)]
    assert s1.regressed and (s1.worse_now.kind, s1.worse_now.from_step, s1.worse_now.to_step) == ("lost", 20, 30)
    assert not s2.regressed and [g.kind for g in s2.regressions] == ["cer"]
    assert [s.sample_index for s in h.regressed] == [1]
    page = render_html(h)
    # badges: the state at the last round
    assert page.count('<span class="badge right">right at the last round</span>') == 1
    assert page.count('<span class="badge wrong">wrong at the last round</span>') == 1
    assert page.count('<span class="badge regressed">') == 1


def test_a_round_where_every_sample_got_the_same_answer_is_said():
    rows = [new_row(step, i, "x y" if step == 10 else f"a{i}", f"t{i}") for step in (0, 10) for i in range(3)]
    h = build_history(rows, job_id=JOB)
    assert [r.same_answer for r in h.rounds] == [None, "x y"]
    out = Console(width=80, record=True)
    print_history(h, out)
    assert "step 10: every sample got the same answer ('x y')" in out.export_text()
    assert "every sample got the same answer: x y" in render_html(h)


def test_the_html_is_one_file_with_chart_filters_and_diffs():
    page = render_html(build_history(scenario(), job_id=JOB))
    assert "<svg id=\"score-chart\"" in page and page.count("class=\"series\"") == 3
    assert "data-filter=\"regressed\"" in page and "data-filter=\"never\"" in page
    assert page.count('data-regressed="1"') == 2 and page.count('<span class="badge regressed">') == 2
    assert "<ins>" in page and "<del>" in page  # character-level differences between rounds
    assert "<th>word_f1</th>" in page and "<td>0.667</td>" in page  # the extra metrics' means
    for remote in ("http://", "https://", "<link", "src="):  # nothing fetched from the network
        assert remote not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_a_large_job_stays_a_few_megabytes():
    rows = []
    for step in range(0, 100 * 10, 10):
        for i in range(200):
            answer = f"answer {i} {'x' * (step // 10 % 7)} {'ok' if (step + i) % 3 else 'no'}"
            rows.append(new_row(step, i, answer, f"answer {i}", cer=((step + i) % 10) / 10))
    page = render_html(build_history(rows, job_id=JOB))
    assert len(page.encode()) < 6_000_000
    assert "other changes not shown" in page


def test_the_report_command_on_a_spool_with_a_failed_round_and_a_torn_line(tmp_path):
    from tests.e2e import job_env, run_entrypoint

    out = tmp_path / "out"
    out.mkdir()
    rows = [{**r, "job_id": "local"} for r in scenario() if r["step"] != 20]
    write_spool(out / "predictions.jsonl", rows, torn='{"job_id": "local", "step": 40, "sample_ind')
    (out / "prediction_rounds.jsonl").write_text(json.dumps(
        {"job_id": "local", "step": 20, "epoch": 0, "epoch_progress": 0.2, "status": "failed", "samples": 3,
         "failed_samples": 3, "seconds": 0.4, "generated_tokens": 0, "tokens_per_s": 0.0,
         "error": "RuntimeError: boom", "time": "2026-11-30T21:00:00Z"}) + "\n")
    proc = run_entrypoint({**job_env(out), "COLUMNS": "80"}, "report", "--html", str(tmp_path / "r.html"), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skipped the torn last line 10" in proc.stdout
    assert "failed round at step 20: RuntimeError: boom" in proc.stdout
    flat = " ".join(proc.stdout.split())  # the summary line may wrap at 80 columns
    assert "3 rounds, 1 failed; 3 samples: 1 right at the last round, 2 ever right, 2 regressed" in flat
    page = (tmp_path / "r.html").read_text()
    assert "FAILED: RuntimeError: boom" in page and 'class="failed-round"' in page
    assert "baseline (step 0)" in page

    local = run_entrypoint(job_env(out), "diagnose", timeout=120)  # local mode: a warning, and the spool
    assert local.returncode == 0 and "[WARN] storage mode: local" in local.stdout  # a warning: nothing failed
    assert "[PASS] local spool: 3 rounds, 9 rows of job local" in local.stdout

    empty = run_entrypoint(job_env(tmp_path / "nothing"), "report", timeout=120)
    assert empty.returncode == 66 and "no predictions for job local" in empty.stdout


def test_a_long_history_keeps_its_regression_in_the_html():
    from predictions.report.view import MAX_CHANGES, _changes

    rows = [new_row(step, 0, "a b" if step == 500 else f"guess {step}", "a b") for step in range(0, 800, 10)]
    h = build_history(rows, job_id=JOB)
    shown, hidden = _changes(h, h.samples[0])
    assert len(shown) == MAX_CHANGES and hidden == 80 - MAX_CHANGES
    lost = [c for c in shown if c["regression"] is not None]
    assert [c["steps"] for c in lost] == ["510"] and any(c["first_right"] and c["steps"] == "500" for c in shown)
    assert shown[-1]["steps"] == "790" and any(c["gap"] for c in shown)
