#!/usr/bin/env bash
# Sets up a fresh machine for the demo and the tests: a virtualenv with the pinned dependencies
# (the CPU build of torch), and PostgreSQL server binaries for the real-database tests.
# Idempotent: a second run checks and installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "${1:-}" = "--with-postgres" ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "setup: installing PostgreSQL server binaries (Debian's package)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
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
