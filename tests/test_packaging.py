"""The image's documents cannot drift from the config schema: .env.example, runpod.json's env,
the README's variable table, the Dockerfile and the pinned requirements."""

from __future__ import annotations

import json
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
