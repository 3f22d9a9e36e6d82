#!/usr/bin/env bash
# Make every secret deploy/compose.yaml mounts, under deploy/secrets/ (git-ignored).
# Idempotent: existing passwords, keys and the CA are kept; run it again after adding
# a device. Needs the edgeloop venv (make demo or make test installs it), mosquitto_passwd
# and openssl.
#   deploy/make-secrets.sh [DEVICE_ID] [BROKER_HOSTNAME...]
set -euo pipefail
cd "$(dirname "$0")"
EDGELOOP="${EDGELOOP:-../.venv/bin/edgeloop}"
DEVICE="${1:-${EDGELOOP_DEVICE_ID:-pi-1}}"
shift || true
S=secrets
umask 077
mkdir -p "$S/mqtt" "$S/mosquitto" "$S/registry" "$S/certs"
chmod -R u+w "$S"   # a previous run left the files read-only

# Broker: ACL for the default roles, passwords (generated once) for services and the device.
"$EDGELOOP" broker render --out "$S/mosquitto" >/dev/null
rm -f "$S/mosquitto/mosquitto.conf"   # the image's own config; only the ACL is needed
"$EDGELOOP" broker passwd --file "$S/mosquitto/passwd" --secrets-dir "$S/mqtt" --generate \
  --user ingest --user inference --user registry --device "$DEVICE" >/dev/null
cp "$S/mqtt/$DEVICE" "$S/mqtt/device"
names=()
for n in "$@"; do names+=(--name "$n"); done
# The CA (and its key) stays in secrets/ca; the broker gets only what it serves with.
"$EDGELOOP" broker certs --out "$S/ca" --name mosquitto "${names[@]}" >/dev/null
for f in ca.crt server.crt server.key; do install -m 0444 "$S/ca/$f" "$S/certs/$f"; done

# Registry signing key (the public half goes to every inference node), tokens.
[[ -f "$S/registry/edgeloop.key" ]] || "$EDGELOOP" registry keygen --out "$S/registry" >/dev/null
for f in registry_token influxdb_admin_token influxdb_admin_password grafana_admin_password; do
  [[ -s "$S/$f" ]] || openssl rand -hex 24 > "$S/$f"
done
# Compose mounts file secrets with their host owner and mode, and the containers run as
# fixed non-root uids (1883, 10001, 472): the files are readable inside, and the
# directory itself (0700) keeps other users of this host out.
find "$S" -mindepth 1 -type d -exec chmod 0755 {} +
find "$S" -type f ! -name .gitignore -exec chmod 0444 {} +
chmod 0700 "$S/ca" && chmod 0400 "$S/ca/ca.key"
chmod 0700 "$S"
echo "secrets in deploy/$S (device $DEVICE): docker compose -f deploy/compose.yaml up -d"
