#!/usr/bin/env bash
# Make a local base image for edgeloop's Dockerfiles when no registry can be reached:
# Debian bookworm (debootstrap, minbase) with Python 3.11 (+ venv) and Mosquitto, as a
# tarball for `docker import`. Every Dockerfile takes it as `--build-arg BASE=...` (and
# the broker's PYTHON_BASE), in place of python:3.11-slim / eclipse-mosquitto.
#
#   scripts/build_base_image.sh            print the tarball's path (built once, cached)
#   scripts/build_base_image.sh --import   also `docker import` it as edgeloop/base:bookworm
#
# The tarball is cached under $EDGELOOP_CACHE (default ~/.cache/edgeloop), keyed by the
# suite, architecture and package list, so CI pays for debootstrap (~2-4 min) once.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE="${BASE_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ARCH="${BASE_ARCH:-$(dpkg --print-architecture)}"
CACHE="${EDGELOOP_CACHE:-$HOME/.cache/edgeloop}"
IMAGE="${BASE_IMAGE:-edgeloop/base:$SUITE}"
# python3-venv: the build stages make a venv; mosquitto(-clients): the broker image and its
# health check; ca-certificates: TLS to the broker and InfluxDB; tzdata: log times.
PACKAGES="python3,python3-venv,mosquitto,mosquitto-clients,ca-certificates,tzdata"

log() { printf 'build_base_image: %s\n' "$*" >&2; }

key="$(printf '%s %s %s %s' "$SUITE" "$ARCH" "$PACKAGES" "v1" | sha256sum | cut -c1-12)"
tarball="$CACHE/base-$SUITE-$ARCH-$key.tar"

if [[ ! -s "$tarball" ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    log "debootstrap needs root; run as root or give a cached $tarball"
    exit 1
  fi
  command -v debootstrap >/dev/null || { log "apt-get install debootstrap"; exit 1; }
  mkdir -p "$CACHE"
  rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $SUITE ($ARCH) from $MIRROR into $rootfs (a few minutes, once)"
  debootstrap --variant=minbase --arch="$ARCH" --include="$PACKAGES" \
    "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # Slim it: package lists, caches, docs and locales are not needed at run time.
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/* "$rootfs"/tmp/*
  # The Debian packages' own daemons never start in a container.
  rm -f "$rootfs"/etc/mosquitto/conf.d/* 2>/dev/null || true
  tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  log "wrote $tarball ($(du -h "$tarball" | cut -f1))"
fi

if [[ "${1:-}" == "--import" ]]; then
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' "$tarball" "$IMAGE" >/dev/null
  log "imported $IMAGE"
fi
echo "$tarball"
