#!/usr/bin/env bash
# Makes (once) a local stand-in for the image's CUDA PyTorch base and prints its tag, for
# `docker build --build-arg BASE_IMAGE=<tag> .` on a machine that cannot pull the real base:
#   debootstrap Debian 12 (minbase) from the apt mirror this machine uses → `docker import`
#   → scripts/standin/Dockerfile: Python 3.11, a venv, the CPU torch wheel found on this disk,
#     and this machine's extra CA certificates (pip in the build reaches the registry through them).
# No registry image is pulled. The tag carries a hash of the recipe, the wheel's name and the
# certificates, so an existing image is reused as it is (a warm run takes a second) and a changed
# recipe builds anew. The debootstrap'ed Debian is kept as an image of its own and reused too.
# Needs root (debootstrap) and an engine (DOCKER_HOST). TORCH_WHEEL=path overrides the search.
set -euo pipefail
cd "$(dirname "$0")"
say() { echo "standin-base: $*" >&2; }

wheel=${TORCH_WHEEL:-}
if [ -z "$wheel" ]; then
  dirs="${PIP_FIND_LINKS:-} /opt/wheels"
  for d in $dirs; do
    for f in "$d"/torch-2.13.0+cpu-cp311-*.whl "$d"/torch-2.13.0-cp311-*manylinux*x86_64.whl; do
      if [ -f "$f" ]; then wheel=$f; break 2; fi
    done
  done
fi
if [ -z "$wheel" ] || [ ! -f "$wheel" ]; then
  say "no torch 2.13.0 cp311 wheel on this disk (looked in PIP_FIND_LINKS and /opt/wheels; set TORCH_WHEEL)"
  exit 2
fi

# The image's recipe: its Dockerfile, the wheel and the CA certificates it gets.
hash=$(cat standin/Dockerfile <(basename "$wheel") /usr/local/share/ca-certificates/*.crt 2>/dev/null \
       | sha256sum | cut -c1-12)
tag="finetune-standin-base:$hash"
if docker image inspect "$tag" >/dev/null 2>&1; then echo "$tag"; exit 0; fi

work=$(mktemp -d /tmp/standin.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs_tag="finetune-standin-rootfs:bookworm"
if ! docker image inspect "$rootfs_tag" >/dev/null 2>&1; then
  if ! command -v debootstrap >/dev/null; then
    say "installing Debian's debootstrap"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  # The mirror apt uses here (its sources' first Debian URI; DEBIAN_MIRROR overrides).
  mirror=${DEBIAN_MIRROR:-$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
           | grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  say "debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$work/fs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$work/fs" -c . | docker import - "$rootfs_tag" >/dev/null
  rm -rf "$work/fs"
fi

ctx=$work/context
mkdir -p "$ctx/certs" "$ctx/wheels"
cp standin/Dockerfile "$ctx/"
cp /usr/local/share/ca-certificates/*.crt "$ctx/certs/" 2>/dev/null || true
ln "$wheel" "$ctx/wheels/" 2>/dev/null || cp "$wheel" "$ctx/wheels/"
say "building $tag (python3, venv, $(basename "$wheel"))"
DOCKER_BUILDKIT=0 docker build -q --build-arg ROOTFS_IMAGE="$rootfs_tag" -t "$tag" "$ctx" >&2
echo "$tag"
