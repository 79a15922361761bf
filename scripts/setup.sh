#!/usr/bin/env bash
# Sets up a fresh machine for the demo and the tests: a virtualenv with the pinned dependencies
# (the CPU build of torch), and PostgreSQL server binaries and chromium for the tests.
# Idempotent: a second run checks and installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Each step says what it does before it starts and how long it took: a first install downloads
# about 1 GB (torch) and takes minutes; pip's own lines show what it is fetching, one per line.
STEP_START=0
step() { STEP_START=$SECONDS; echo "setup: $*"; }
took() { echo "setup: ... done in $((SECONDS - STEP_START))s"; }
PIP="pip install --disable-pip-version-check --progress-bar off"

# --with-postgres: the system packages the tests use (their name kept for run-tests.sh): the
# PostgreSQL server binaries, and Debian's chromium for the HTML report's browser test.
if [ "${1:-}" = "--with-postgres" ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  missing=()
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} (Debian's packages)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    took
  fi
fi

if [ ! -x .venv/bin/python ]; then
  step "creating the virtualenv .venv with $PY"
  "$PY" -m venv .venv
  took
fi
. .venv/bin/activate
if ! python -c "import torch, transformers, pytest" 2>/dev/null || [ requirements-dev.txt -nt .venv/.installed ]; then
  step "installing torch 2.13.0, the CPU build (about 200 MB; a looser pin would pull CUDA)"
  $PIP torch==2.13.0
  took
  step "installing the pinned dependencies of requirements-dev.txt (transformers, accelerate, peft, pytest, ...)"
  $PIP -r requirements-dev.txt
  took
  touch .venv/.installed
else
  echo "setup: .venv already has the pinned dependencies; nothing to install"
fi
