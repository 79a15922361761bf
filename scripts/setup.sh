#!/usr/bin/env bash
# Sets up a fresh machine for the demo and the tests: a virtualenv with the pinned dependencies
# (the CPU build of torch), and PostgreSQL server binaries and chromium for the tests.
# Idempotent: a second run checks and installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# --with-postgres: the system packages the tests use (their name kept for run-tests.sh): the
# PostgreSQL server binaries, and Debian's chromium for the HTML report's browser test.
if [ "${1:-}" = "--with-postgres" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  missing=()
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} (Debian's packages)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch, transformers, pytest" 2>/dev/null || [ requirements-dev.txt -nt .venv/.installed ]; then
  echo "setup: installing the pinned dependencies into .venv"
  pip install -q --disable-pip-version-check torch==2.13.0   # the CPU build; a looser pin pulls CUDA
  pip install -q --disable-pip-version-check -r requirements-dev.txt
  touch .venv/.installed
fi
