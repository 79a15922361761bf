"""The Dockerfiles pass hadolint, and the image's base is chosen by a build argument."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.e2e import ROOT

DOCKERFILES = ["Dockerfile", "scripts/standin/Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES)
def test_hadolint_finds_nothing(path):
    hadolint = shutil.which("hadolint") or str(ROOT / ".venv" / "bin" / "hadolint")
    done = subprocess.run([hadolint, "--no-color", path], cwd=ROOT, text=True, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_base_is_a_build_argument_with_a_cuda_pytorch_default():
    text = (ROOT / "Dockerfile").read_text()
    default = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, flags=re.M)
    assert default and re.fullmatch(r"pytorch/pytorch:2\.13\.0-cuda[\d.]+-cudnn9-runtime(@sha256:[0-9a-f]{64})?",
                                    default.group(1))
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, flags=re.M)
