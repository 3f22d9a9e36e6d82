"""``edgeloop collector``: read a serial device, a simulator or a recording; publish."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from services.collector.config import CollectorConfig, Profile, SourceKind, TimestampMode
from services.common.cli import EXIT_FAILED, EXIT_OK, base_parser, resolve_config
from services.common.lifecycle import StopEvent
from services.common.metrics import new_registry
from services.common.mqtt import Protocol

log = logging.getLogger("services.collector")


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("edgeloop collector", __doc__)
    p.add_argument("--source", choices=[s.value for s in SourceKind])
    p.add_argument("--device", help="device id (required)")
    p.add_argument("--site", help="site id (default: default)")
    g = p.add_argument_group("serial")
    g.add_argument("--serial-port", help="/dev/ttyACM0 or a pyserial URL (socket://host:port)")
    g.add_argument("--baud", type=int)
    g = p.add_argument_group("replay")
    g.add_argument("--csv", help="CSV file, or Edge Impulse .json file or directory")
    g.add_argument("--speed", type=float, help="replay speed-up; 0 = as fast as possible")
    g.add_argument("--limit", type=int, help="stop after N rows (replay, simulate)")
    g.add_argument("--timestamps", choices=[t.value for t in TimestampMode])
    g = p.add_argument_group("simulate")
    g.add_argument("--profile", choices=[x.value for x in Profile])
    g.add_argument("--interval", type=float, help="seconds between readings")
    g.add_argument("--seed", type=int)
    g.add_argument("--inject", action="append", metavar="KIND@SECONDS",
                   help="fire@<s> or stuck@<s>; repeatable")
    g = p.add_argument_group("publishing")
    g.add_argument("--mqtt-host")
    g.add_argument("--mqtt-port", type=int)
    g.add_argument("--mqtt-protocol", choices=[x.value for x in Protocol])
    g.add_argument("--outbox", help="SQLite store-and-forward file")
    g.add_argument("--outbox-max", type=int, help="unacknowledged readings kept")
    g.add_argument("--batch-max", type=int, help="readings per message when the rate is high")
    g.add_argument("--metrics-host")
    g.add_argument("--metrics-port", type=int, help="0 = off")
    g.add_argument("--exit-when-done", action="store_true", default=None,
                   help="exit 0 once a finite source is done and everything is acknowledged")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    overrides: dict[str, Any] = {
        "source": args.source, "device": args.device, "site": args.site,
        "serial_port": args.serial_port, "baud": args.baud,
        "csv": args.csv, "speed": args.speed, "limit": args.limit,
        "timestamps": args.timestamps, "profile": args.profile,
        "interval": args.interval, "seed": args.seed,
        "inject": tuple(args.inject) if args.inject else None,
        "mqtt.host": args.mqtt_host, "mqtt.port": args.mqtt_port,
        "mqtt.protocol": args.mqtt_protocol,
        "outbox": args.outbox, "outbox_max": args.outbox_max, "batch_max": args.batch_max,
        "metrics_host": args.metrics_host, "metrics_port": args.metrics_port,
        "exit_when_done": args.exit_when_done,
    }
    config = resolve_config(CollectorConfig, args, overrides)
    if isinstance(config, int):
        return config
    import sqlite3

    from services.collector.outbox import OutboxError
    from services.collector.service import Collector

    stop = StopEvent.install()
    collector = Collector(config, new_registry())
    try:
        try:
            collector.start()
        except (OutboxError, sqlite3.Error, OSError) as exc:
            # A locked or unreadable outbox, a metrics port in use: say so, no traceback.
            log.error("cannot start: %s", exc)
            return EXIT_FAILED
        while not stop.wait(0.2):
            if collector.failed:
                break
            if config.exit_when_done and collector.wait_done(0):
                log.info("done: every reading is acknowledged by the broker")
                break
    finally:
        collector.stop()
    if collector.failed:
        log.error("collector failed: %s", collector.failed)
        return EXIT_FAILED
    return EXIT_OK
