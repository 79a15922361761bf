"""Data from an https-style URL: downloaded once onto the volume, retried, size-checked, reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import QUICK_TRAINING, job_env, run_entrypoint, spool_rows
from tests.http_servers import FileServer
from trainer.demo import TRAIN_FILE
from trainer.fetch import DownloadError, local_path
from trainer.redact import redact_url


@pytest.fixture
def server():
    s = FileServer({"/data/train.jsonl": TRAIN_FILE.read_bytes()[:20_000].rsplit(b"\n", 1)[0] + b"\n"})
    yield s
    s.close()


def test_downloaded_once_and_reused_by_the_same_job_only(server, tmp_path):
    url = f"{server.url}/data/train.jsonl?token=SECRET-SIGNATURE"
    first = local_path(url, tmp_path, "job-a")
    assert first.read_bytes() == server.files["/data/train.jsonl"]
    assert local_path(url.replace("SECRET", "RESIGNED"), tmp_path, "job-a") == first  # a re-signed URL: same file
    assert len(server.hits) == 1
    other = local_path(url, tmp_path, "job-b")  # another job on the volume: its own copy, never A's
    assert other != first and len(server.hits) == 2
    assert "SECRET" not in str(first) and redact_url(url) == f"{server.url}/data/train.jsonl"


def test_transient_failures_are_retried(server, tmp_path, monkeypatch):
    import trainer.fetch as fetch

    monkeypatch.setattr(fetch._download.retry, "wait", lambda _state: 0)
    server.fail_first["/data/train.jsonl"] = 2
    path = local_path(f"{server.url}/data/train.jsonl", tmp_path, "job")
    assert path.exists() and len(server.hits) == 3


def test_missing_file_is_a_clear_error_without_the_query(server, tmp_path):
    with pytest.raises(DownloadError, match=r"not found \(404\)") as info:
        local_path(f"{server.url}/nope.jsonl?token=SECRET", tmp_path, "job")
    assert "SECRET" not in str(info.value)
    assert not list(Path(tmp_path).rglob("*.jsonl"))


@pytest.mark.slow
def test_training_from_a_dataset_served_over_http(server, tmp_path):
    out = tmp_path / "out"
    env = job_env(out, DATASET_PATH=f"{server.url}/data/train.jsonl?sig=abc",
                  TRAINING_CONFIG={**QUICK_TRAINING, "max_steps": 10, "save_strategy": "no"},
                  PREDICTIONS_CONFIG={"enabled": True, "sample_count": 3, "sample_frequency": "steps",
                                      "step_interval": 5, "max_new_tokens": 4, "baseline": False})
    proc = run_entrypoint(env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "sig=abc" not in log and "(query hidden)" in log
    rows = spool_rows(out)
    assert {r["step"] for r in rows} == {5, 10} and rows[0]["sample_source"] == "dataset"  # the platform's name for the job's data
    assert rows[0]["sample_source_id"] == "train.jsonl"
    assert len(server.hits) == 1  # downloaded once, by one process
