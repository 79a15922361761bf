#!/usr/bin/env bash
# Set up (once) and run the main job on its embedded default: the bundled demo, predictions kept
# locally in ./outputs/predictions.jsonl. Extra arguments go to entrypoint.py.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python entrypoint.py "$@"
