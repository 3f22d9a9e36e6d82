"""Container health check for the Python services (stdlib only; runs in a few ms).

    healthcheck.py --port-env EDGELOOP_METRICS_PORT --port 9102 --path /metrics \
                   --require edgeloop_ingest_mqtt_connected

Healthy when GET http://127.0.0.1:<port><path> answers 200 and, with --require, every
named gauge is exported with the value 1 (e.g. "connected to the broker"). The port is
read from the same environment variable the service reads, so overriding it keeps the
check pointed at the right place.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="healthcheck")
    p.add_argument("--port", type=int, required=True, help="default port")
    p.add_argument("--port-env", help="environment variable that overrides the port")
    p.add_argument("--path", default="/metrics")
    p.add_argument("--require", action="append", default=[], metavar="GAUGE")
    p.add_argument("--timeout", type=float, default=4.0)
    args = p.parse_args(argv)
    port = int(os.environ.get(args.port_env, args.port)) if args.port_env else args.port
    url = f"http://127.0.0.1:{port}{args.path}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            body = resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    values = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = value
    for gauge in args.require:
        if values.get(gauge) not in {"1", "1.0"}:
            print(f"unhealthy: {gauge} = {values.get(gauge, 'absent')}")
            return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
