#!/usr/bin/env bash
# Sets up a fresh machine for the demo and the tests: a virtualenv with the pinned dependencies
# (the CPU build of torch), and PostgreSQL server binaries and chromium for the tests.
# Idempotent: a second run checks and installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Each step says what it does before it starts and how long it took: a first install downloads
# torch (the CPU build on a machine without a GPU: 190 MB) and the rest, and takes minutes; pip's
# own lines show what it is fetching, one per line.
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
  # torch: PyPI's Linux wheel is the CUDA build (several GB with its nvidia-* packages).
  # On a machine without an NVIDIA GPU, the CPU build (a 190 MB wheel, 750 MB installed): a local
  # wheel if pip's configured find-links has one, else PyTorch's CPU index; PyPI's only when that
  # index cannot be reached (said). With a GPU, PyPI's CUDA build.
  if python -c "import torch" 2>/dev/null; then
    echo "setup: torch $(python -c 'import torch; print(torch.__version__)') is installed; kept"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    step "installing torch 2.13.0, the CUDA build (a GPU is here; several GB with its nvidia-* packages)"
    $PIP torch==2.13.0
    took
  elif wheels=$(mktemp -d) && pip download --quiet --no-deps -d "$wheels" "torch==2.13.0+cpu" >/dev/null 2>&1; then
    step "installing torch 2.13.0+cpu, the CPU build (no GPU here), from a wheel pip's configuration finds (190 MB)"
    $PIP "torch==2.13.0+cpu" --find-links "$wheels"
    rm -rf "$wheels"
    took
  else
    step "installing torch 2.13.0+cpu, the CPU build (no GPU here; a 190 MB wheel from PyTorch's CPU index)"
    if ! $PIP "torch==2.13.0+cpu" --index-url https://download.pytorch.org/whl/cpu; then
      echo "setup: PyTorch's CPU index cannot be reached: installing PyPI's torch 2.13.0, the CUDA build" \
           "(several GB with its nvidia-* packages; it runs on a CPU too)"
      $PIP torch==2.13.0
    fi
    took
  fi
  step "installing the pinned dependencies of requirements-dev.txt (transformers, accelerate, peft, pytest, ...)"
  $PIP -r requirements-dev.txt
  took
  touch .venv/.installed
else
  echo "setup: .venv already has the pinned dependencies; nothing to install"
fi
