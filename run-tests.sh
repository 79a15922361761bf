#!/usr/bin/env bash
# Set up (once) and run the whole test suite, slow end-to-end tests included (as CI does).
# Extra arguments go to pytest, e.g. `bash run-tests.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh --with-postgres
exec .venv/bin/python -m pytest "$@"
