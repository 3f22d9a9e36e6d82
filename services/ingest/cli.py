"""``edgeloop ingest`` / ``python -m services.ingest``: run ingest, or count what is stored."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from services.common.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, base_parser, resolve_config
from services.common.lifecycle import StopEvent
from services.common.metrics import new_registry
from services.ingest.config import IngestConfig

log = logging.getLogger("services.ingest")


def _parser() -> argparse.ArgumentParser:
    p = base_parser("edgeloop ingest", "Store telemetry from MQTT, each (device, seq) once.")
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--mqtt-protocol", choices=["5", "3.1.1"])
    p.add_argument("--mqtt-username")
    p.add_argument("--client-id", help="stable MQTT client id (the persistent session's key)")
    p.add_argument("--group", help="shared subscription group (default ingest)")
    p.add_argument("--no-shared", action="store_true", help="plain subscription, not $share")
    p.add_argument("--storage", help="sqlite:///path.db | influxdb://host:port?org=O&bucket=B"
                   " | influxdb1://host:port/db (secrets: EDGELOOP_STORAGE__TOKEN/PASSWORD)")
    p.add_argument("--storage-username")
    p.add_argument("--state-dir", help="where the InfluxDB backends keep their seq ledger")
    p.add_argument("--batch-max", type=int, help="readings per storage write")
    p.add_argument("--batch-wait", type=float, help="seconds a batch may wait to fill")
    p.add_argument("--batch-idle", type=float,
                   help="write the batch when no message arrived for this many seconds")
    p.add_argument("--devices", help="comma-separated allow-list of device ids")
    p.add_argument("--gap-grace", type=float, help="seconds before a seq gap is asked for")
    p.add_argument("--resend-interval", type=float, help="seconds between RESEND requests")
    p.add_argument("--metrics-host")
    p.add_argument("--metrics-port", type=int, help="/metrics port (0 = off)")
    p.add_argument("--count", action="store_true",
                   help="print how many readings the storage holds per device, and exit")
    return p


def _overrides(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "mqtt.host": a.mqtt_host, "mqtt.port": a.mqtt_port, "mqtt.protocol": a.mqtt_protocol,
        "mqtt.username": a.mqtt_username, "client_id": a.client_id, "group": a.group,
        "shared": False if a.no_shared else None, "storage.url": a.storage,
        "storage.username": a.storage_username, "storage.state_dir": a.state_dir,
        "batch_max": a.batch_max, "batch_wait_s": a.batch_wait,
        "batch_idle_s": a.batch_idle,
        "devices": a.devices.split(",") if a.devices else None,
        "gap_grace_s": a.gap_grace, "resend_interval_s": a.resend_interval,
        "metrics_host": a.metrics_host, "metrics_port": a.metrics_port,
    }


def _count(config: IngestConfig) -> int:
    from services.ingest.storage import open_storage

    s = config.storage
    with open_storage(
        s.url, state_dir=s.state_dir, token=s.token.get_secret_value() if s.token else None,
        username=s.username, password=s.password.get_secret_value() if s.password else None,
    ) as storage:
        ranges = storage.seq_ranges()
        for device in sorted(ranges):
            spans = " ".join(f"{lo}..{hi}" for lo, hi in ranges[device])
            print(f"{device}\t{storage.count(device)}\t{spans}")
        print(f"total\t{storage.count()}")
    return EXIT_OK


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    config = resolve_config(IngestConfig, args, _overrides(args))
    if isinstance(config, int):
        return config
    if args.count:
        return _count(config)
    from services.ingest.service import IngestService

    stop = StopEvent.install()
    service = IngestService(config, new_registry())
    try:
        try:
            service.start()
        except (ValueError, OSError) as exc:
            log.error("ingest cannot start: %s", exc)
            return EXIT_CONFIG if isinstance(exc, ValueError) else EXIT_FAILED
        while not stop.wait(1.0):
            if service.failed.is_set():
                return EXIT_FAILED
    finally:
        service.stop()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
