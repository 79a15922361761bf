"""A job's environment for the tests (a pytest plugin, registered in conftest.py): every variable
of the image's (trainer/config/environment.py VARIABLES) cleared, then OUTPUT_DIR and the test's
own values set, non-strings as JSON.

`job_env(output_dir, **values)` builds the dict for a subprocess (the entrypoint); `set_job_env`
and the `job_environ` fixture do the same to this process's environment through monkeypatch
(undone after the test), for code that reads os.environ in-process (load_config, run_checks)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from trainer.config.environment import VARIABLES


def as_value(value: Any) -> str:
    """An environment variable's text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def job_env(output_dir: Path | None, **values) -> dict[str, str]:
    """The test process's environment without any of the job's variables (nor accelerate's
    ACCELERATE_*: the launcher's settings are the job's too), plus OUTPUT_DIR and `values`."""
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("ACCELERATE_")}
    if output_dir is not None:
        env["OUTPUT_DIR"] = str(output_dir)
    for k, v in values.items():
        env[k] = as_value(v)
    return env


def set_job_env(monkeypatch: pytest.MonkeyPatch, output_dir: Path | None, *, clear: Iterable[str] = VARIABLES,
                **values) -> Path | None:
    """This process's environment as a job's: the names of `clear` unset (every variable of the
    image's by default), OUTPUT_DIR set to `output_dir` (unless None: a template that sets its
    own), then `values` (which may set OUTPUT_DIR again). Returns `output_dir`."""
    for name in clear:
        monkeypatch.delenv(name, raising=False)
    if output_dir is not None:
        monkeypatch.setenv("OUTPUT_DIR", str(output_dir))
    for k, v in values.items():
        monkeypatch.setenv(k, as_value(v))
    return output_dir


@pytest.fixture
def job_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Path]:
    """`job_environ(**values)`: set_job_env with OUTPUT_DIR tmp_path/"out"; returns that folder."""
    def use(**values) -> Path:
        return set_job_env(monkeypatch, tmp_path / "out", **values)
    return use
