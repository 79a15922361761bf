#!/usr/bin/env bash
# Starts a Docker engine for the docker test suite (tests/test_docker.py) and prints the
# DOCKER_HOST to use, e.g. `export DOCKER_TEST_HOST=$(bash scripts/docker-engine.sh)`.
#
# The engine listens on its own socket, not /var/run/docker.sock: the PostgreSQL fixture
# (tests/pg.py) switches to testcontainers whenever the default engine answers, and that pulls
# an image from a registry these machines cannot reach. Installs Debian's docker.io when dockerd
# is absent (root only). Idempotent: an engine already answering on the socket is reused.
# Exits non-zero, saying why on stderr, when no engine can be started here.
set -euo pipefail
SOCK=${DOCKER_TEST_SOCKET:-/run/finetune-test-docker.sock}
HOST="unix://$SOCK"
LOG=${DOCKER_TEST_LOG:-/tmp/finetune-test-dockerd.log}
say() { echo "docker-engine: $*" >&2; }

answers() { DOCKER_HOST=$HOST timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if answers; then echo "$HOST"; exit 0; fi
if [ "$(id -u)" != 0 ]; then say "not root: cannot start dockerd"; exit 1; fi
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
  say "installing Debian's docker.io"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi

start() {  # $@: extra dockerd options
  rm -f "$SOCK"
  nohup dockerd -H "$HOST" --pidfile /run/finetune-test-dockerd.pid "$@" >>"$LOG" 2>&1 &
  for _ in $(seq 60); do
    if answers; then return 0; fi
    if ! kill -0 $! 2>/dev/null; then return 1; fi
    sleep 1
  done
  kill $! 2>/dev/null || true
  return 1
}

# overlay2 works on these machines; vfs (full copies of every layer: slow, large) is the fallback
# where the filesystem refuses overlay mounts.
if start || { say "dockerd with its default storage driver failed (see $LOG); trying vfs"; start --storage-driver=vfs; }; then
  echo "$HOST"
  exit 0
fi
say "dockerd did not start: $(tail -n 3 "$LOG" | tr '\n' ' ')"
exit 1
