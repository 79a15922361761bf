#!/usr/bin/env bash
# Runs a command with the variables of an env file read as `docker run --env-file` reads them:
# each `NAME=value` line taken literally (JSON, quotes and spaces kept as they are), `#` lines and
# blank lines skipped, an empty value left unset. `source .env` does not do that: the shell parses
# `TRAINING_CONFIG={"max_steps": 100}` as shell words and the JSON is lost.
#
#   bash scripts/with-env-file.sh .env .venv/bin/python entrypoint.py check
set -euo pipefail
if [ $# -lt 2 ] || [ ! -f "$1" ]; then
  echo "usage: bash scripts/with-env-file.sh ENV_FILE COMMAND [ARG...]  (ENV_FILE: NAME=value lines, as for docker --env-file)" >&2
  exit 64
fi
file=$1
shift
while IFS= read -r line || [ -n "$line" ]; do
  line=${line%$'\r'}
  case $line in ''|'#'*) continue ;; esac
  name=${line%%=*}
  if [[ ! $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "with-env-file: $file: not a NAME=value line: ${line:0:40}" >&2
    exit 65
  fi
  if [ "$name" = "$line" ]; then
    continue  # `NAME` alone: docker passes the caller's value; it is in this environment already
  fi
  value=${line#*=}
  if [ -n "$value" ]; then export "$name=$value"; else unset "$name"; fi
done < "$file"
exec "$@"
