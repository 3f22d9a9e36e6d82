#!/usr/bin/env bash
# Build the wheelhouse the images install from, on the host, so `docker build` needs no
# network (pip --no-index inside the build): the edgeloop wheel itself plus every
# dependency of one image profile.
#
#   scripts/wheelhouse.sh edge              wheelhouse/edge: collector, ingest, registry,
#                                           inference, broker (render stage)
#   scripts/wheelhouse.sh train             wheelhouse/train: the trainer (TensorFlow)
#   scripts/wheelhouse.sh edge arm64        also add linux/arm64 wheels (for buildx)
#
# One directory may hold wheels for several architectures: pip inside each build picks
# the ones for its platform. Dependencies already present are reused offline; only the
# edgeloop wheel is rebuilt every time.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${1:-edge}"
PLATFORM="${2:-}"
PIP="${PIP:-.venv/bin/pip}"
OUT="wheelhouse/$PROFILE"

case "$PROFILE" in
  edge) extras="edge" ;;
  train) extras="train" ;;
  *) echo "wheelhouse.sh: unknown profile $PROFILE (edge or train)" >&2; exit 2 ;;
esac

log() { printf 'wheelhouse: %s\n' "$*" >&2; }
mkdir -p "$OUT"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# The project wheel, from the working tree (no network: the venv has setuptools).
rm -f "$OUT"/edgeloop-*.whl
rm -rf build/lib build/bdist.* 2>/dev/null || true
"$PIP" wheel -q --no-deps --no-build-isolation --wheel-dir "$OUT" . >/dev/null
wheel="$(ls "$OUT"/edgeloop-*.whl)"

if [[ -z "$PLATFORM" ]]; then
  if "$PIP" wheel -q --no-index --find-links "$OUT" --wheel-dir "$OUT" "$wheel[$extras]" \
      >/dev/null 2>&1; then
    log "$OUT up to date (offline)"
  else
    log "pip wheel $wheel[$extras] -> $OUT (downloads what is missing)"
    "$PIP" wheel -q --find-links "$OUT" --wheel-dir "$OUT" "$wheel[$extras]"
  fi
else
  case "$PLATFORM" in
    arm64|aarch64|linux/arm64) tags=(manylinux2014_aarch64 manylinux_2_17_aarch64
                                     manylinux_2_28_aarch64 linux_aarch64) ;;
    amd64|x86_64|linux/amd64) tags=(manylinux2014_x86_64 manylinux_2_17_x86_64
                                    manylinux_2_28_x86_64 linux_x86_64) ;;
    *) echo "wheelhouse.sh: unknown platform $PLATFORM" >&2; exit 2 ;;
  esac
  platform_args=()
  for t in "${tags[@]}"; do platform_args+=(--platform "$t"); done
  log "pip download $wheel[$extras] for ${tags[0]} -> $OUT (binary wheels only)"
  "$PIP" download -q --only-binary=:all: "${platform_args[@]}" --python-version 3.11 \
    --implementation cp --abi cp311 --abi abi3 --abi none \
    --find-links "$OUT" --dest "$OUT" "$wheel[$extras]"
fi
log "$(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT"
