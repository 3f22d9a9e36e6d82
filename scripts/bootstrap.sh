#!/usr/bin/env bash
# Install what edgeloop needs on a fresh machine, idempotently.
#   scripts/bootstrap.sh test   system packages (when root) + venv with every extra
#   scripts/bootstrap.sh demo   venv only (no root, no Docker): edge + trainer + amqtt
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${1:-test}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

# Debian packages the test suite drives for real.
SYSTEM_PACKAGES=(
  mosquitto mosquitto-clients      # broker + mosquitto_rr (MQTT v5 request/response client)
  prometheus                       # scrapes the services in integration tests
  influxdb victoria-metrics        # InfluxDB 1.x API; an influxdb-client (v2 write API) sink
  socat                            # pty pairs for the serial tests
  openssl                          # make certs
  gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm   # firmware build + QEMU tests
  docker.io debootstrap            # container tests: engine started by the test run
)

log() { printf 'bootstrap: %s\n' "$*" >&2; }

install_system() {
  if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
    log "not root or no apt-get: skipping system packages (tests needing them will skip)"
    return
  fi
  local missing=()
  for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  # The Debian packages start their daemons; tests start their own on free ports.
  for svc in mosquitto prometheus influxdb victoria-metrics; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
      systemctl stop "$svc" || true
    fi
  done
}

install_venv() {
  local extras="$1"
  local stamp="$VENV/.edgeloop-$PROFILE"
  local want
  want="$(cat pyproject.toml | sha256sum | cut -c1-16)-$extras"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  log "pip install -e .[$extras] into $VENV (first run downloads TensorFlow, ~5 min)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -e ".[$extras]"
  echo "$want" > "$stamp"
}

case "$PROFILE" in
  test)
    install_system
    install_venv "edge,edge-legacy,embedded-broker,train,dev"
    ;;
  demo)
    install_venv "edge,embedded-broker,train"
    ;;
  *) log "unknown profile $PROFILE"; exit 2 ;;
esac
