"""The image's documents cannot drift from the config schema: .env.example, runpod.json's env,
the README's variable table, the Dockerfile and the pinned requirements."""

from __future__ import annotations

import json
import os
import re
from importlib.metadata import version
from pathlib import Path

from trainer.config.environment import VARIABLES

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_lists_every_variable_with_a_comment():
    lines = (ROOT / ".env.example").read_text().splitlines()
    names = [line.split("=", 1)[0] for line in lines if re.match(r"^[A-Z_]+=", line)]
    assert names == list(VARIABLES)
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z_]+=", line):
            assert lines[i - 1].startswith("#"), f"{line} has no comment above it"


def test_env_example_is_a_valid_env_file_with_valid_json_examples():
    """docker --env-file takes NAME=value lines literally: no quotes, no spaces around `=`; and every
    example in a comment is JSON a user can paste as it is."""
    for line in (ROOT / ".env.example").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        assert re.fullmatch(r"[A-Z_][A-Z0-9_]*=[^'\" ]*", line), line
    examples = 0
    decoder = json.JSONDecoder()
    for line in (ROOT / ".env.example").read_text().splitlines():
        at = line.find("{") if line.startswith("#") else -1
        while at >= 0:  # every {...} in a comment is an example: it must parse as JSON
            _value, end = decoder.raw_decode(line, at)
            examples += 1
            at = line.find("{", end)
    assert examples >= 3


def test_runpod_template_env_matches_the_schema():
    body = json.loads((ROOT / "runpod.json").read_text())
    assert list(body["env"]) == list(VARIABLES)
    assert body["volumeMountPath"] == "/workspace"
    for key in ("name", "imageName", "containerDiskInGb", "volumeInGb", "ports"):
        assert key in body
    # secrets come from RunPod's secret store, never literal values in a template
    for name, (_what, _mode, secret) in VARIABLES.items():
        if secret and body["env"][name]:
            assert body["env"][name].startswith("{{ RUNPOD_SECRET_")


def test_readme_variable_table_matches_the_schema():
    readme = (ROOT / "README.md").read_text()
    table = re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.M)
    assert table == list(VARIABLES)


def test_dockerfile_keeps_caches_and_outputs_on_the_volume():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HF_HOME=/workspace/" in dockerfile and "OUTPUT_DIR=/workspace/" in dockerfile
    assert "WORKDIR /app" in dockerfile and "requirements.txt" in dockerfile


def test_tests_run_with_the_pinned_requirements():
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)(\[[a-z]+\])?==([^\s#]+)", line)
        if m:
            assert version(m.group(1)) == m.group(3), f"{m.group(1)} installed differs from its pin"


def test_an_env_file_runs_locally_with_its_json_values(tmp_path):
    """scripts/with-env-file.sh reads .env as `docker run --env-file` does: the JSON values reach the
    entrypoint whole (`source .env` would have split them into shell words)."""
    import subprocess
    import sys

    lines = (ROOT / ".env.example").read_text().splitlines()
    values = {"TRAINING_CONFIG": '{"max_steps": 7, "learning_rate": 0.001}',
              "PREDICTIONS_CONFIG": '{"sample_count": 3, "sample_frequency": "epoch"}', "OUTPUT_DIR": str(tmp_path / "out")}
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(f"{line}{values[line[:-1]]}" if line[:-1] in values else line for line in lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    proc = subprocess.run(["bash", "scripts/with-env-file.sh", str(env_file), sys.executable, "entrypoint.py", "check"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "length: 7 steps — TRAINING_CONFIG" in out and "learning rate: 0.001 — TRAINING_CONFIG" in out
    assert "predictions: 3 samples, at each epoch end" in out


def test_bitsandbytes_says_nothing_about_the_kernels_package_at_import():
    """bitsandbytes (imported by peft and the Trainer) warns at import on CPUs with AVX512-BF16 that
    the optional `kernels` package is absent; the image's processes import `trainer` first, which
    quiets that one logger (trainer/__init__.py)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import trainer, bitsandbytes, logging; "
                           "logging.getLogger('bitsandbytes').warning('other warnings still show')"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "gemm_4bit_forward" not in proc.stdout + proc.stderr and "other warnings still show" in proc.stderr
