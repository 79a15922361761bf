"""The README's first two commands, run as a new user runs them: in a fresh clone, with nothing
installed there (the clone makes its own .venv through scripts/setup.sh)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e import QUICK_TRAINING
from trainer.config.environment import VARIABLES

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the README's first code block."""
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S).group(1)
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_starts_with_the_demo_and_the_tests():
    assert readme_commands() == ["bash run-demo.sh", "bash run-tests.sh"]


@pytest.mark.slow
def test_the_readmes_two_commands_work_in_a_fresh_clone(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith(("VIRTUAL_ENV", "PYTEST"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    demo, tests = readme_commands()

    # The demo as written, kept short: a few steps instead of four epochs (the same code path).
    short = {**QUICK_TRAINING, "max_steps": 20, "save_strategy": "no"}
    proc = subprocess.run(demo.split(), cwd=clone, env={**env, "TRAINING_CONFIG": json.dumps(short)},
                          capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "setup: installing torch 2.13.0" in out  # nothing was there: setup said what it installs
    assert re.search(r"predictions: \d+ rounds \(0 failed\)", out), out[-3000:]
    assert (clone / "outputs" / "predictions.jsonl").stat().st_size > 0
    assert (clone / ".venv" / "bin" / "python").exists()

    # The tests as written, limited by pytest's own arguments (which run-tests.sh passes on).
    proc = subprocess.run([*tests.split(), "-q", "-p", "no:cacheprovider", "tests/test_packaging.py"], cwd=clone,
                          env=env, capture_output=True, text=True, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert re.search(r"\d+ passed", out) and "failed" not in out, out[-2000:]
