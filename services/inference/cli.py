"""``edgeloop serve``: edge inference over MQTT and HTTP, live alerts, hot model updates.

Subcommands that act on the local model cache (no broker, no network):

* ``edgeloop serve rollback NAME [--to V]``: stop serving the current version of NAME,
  go back to the previous verified one kept on disk (a running service follows within
  ``cache_poll_s``), and never take the rolled-back version again from an announcement;
* ``edgeloop serve models``: list the versions kept on disk and which one is current.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from services.common.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, base_parser, resolve_config
from services.common.lifecycle import StopEvent
from services.common.metrics import new_registry
from services.inference.cache import BundleCache
from services.inference.config import InferenceConfig, RuntimeChoice

log = logging.getLogger("edgeloop.serve")


def _cache_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--model-dir", type=Path, default=InferenceConfig().model_dir,
                   help="the verified-bundle cache of the service (default %(default)s)")
    return p


def _rollback(argv: list[str]) -> int:
    p = _cache_parser("edgeloop serve rollback",
                      "serve the previous verified version of a model again")
    p.add_argument("name")
    p.add_argument("--to", type=int, default=None, help="a specific kept version")
    args = p.parse_args(argv)
    cache = BundleCache(args.model_dir)
    try:
        before = cache.current(args.name)
        now = cache.rollback(args.name, args.to)
    except ValueError as exc:
        print(f"edgeloop serve rollback: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{args.name}: v{before} -> v{now} (v{before} will not be loaded again from an "
          "announcement; a newer version will)")
    return EXIT_OK


def _models(argv: list[str]) -> int:
    args = _cache_parser("edgeloop serve models", "list the verified bundles kept on disk"
                         ).parse_args(argv)
    cache = BundleCache(args.model_dir)
    for name in cache.names():
        current = cache.current(name)
        rejected = cache.rejected(name)
        versions = [
            f"v{v}{'*' if v == current else ''}{' (rolled back)' if v in rejected else ''}"
            for v in cache.versions(name)
        ]
        print(f"{name}: {' '.join(versions) or '-'}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = base_parser("edgeloop serve", "edge inference: MQTT request/response, HTTP, alerts. "
                    "Also: `edgeloop serve rollback NAME`, `edgeloop serve models`.")
    p.add_argument("--mqtt-host")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--mqtt-protocol", choices=["5", "3.1.1"])
    p.add_argument("--client-id")
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int, help="0 picks a free port")
    p.add_argument("--registry", help="registry base URL (for relative announcement URLs)")
    p.add_argument("--public-key", type=Path, help="Ed25519 public key (PEM) models are "
                   "signed with")
    p.add_argument("--model-dir", type=Path, help="verified bundle cache")
    p.add_argument("--models", help="follow only these announcements: name[,name]")
    p.add_argument("--bundle", type=Path, action="append",
                   help="load a local signed bundle at start (repeatable); its announcement "
                   "is read from <bundle>.json")
    p.add_argument("--trust-local-bundles", action="store_true", default=None,
                   help="load --bundle files without a signature check")
    p.add_argument("--runtime", choices=[c.value for c in RuntimeChoice])
    p.add_argument("--aalto-model", help="enable the Aalto tutorial adapter for this model")
    p.add_argument("--no-stream", action="store_true", help="do not watch telemetry")
    p.add_argument("--forward", action="store_true", default=None,
                   help="edge filtering: forward anomalies and summaries upstream")
    return p


def main(argv: list[str]) -> int:
    if argv and argv[0] == "rollback":
        return _rollback(argv[1:])
    if argv and argv[0] == "models":
        return _models(argv[1:])
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {
        "mqtt.host": args.mqtt_host,
        "mqtt.port": args.mqtt_port,
        "mqtt.protocol": args.mqtt_protocol,
        "client_id": args.client_id,
        "http_host": args.http_host,
        "http_port": args.http_port,
        "registry": args.registry,
        "public_key": args.public_key,
        "model_dir": args.model_dir,
        "models": args.models.split(",") if args.models else None,
        "bundles": args.bundle,
        "trust_local_bundles": args.trust_local_bundles,
        "runtime": args.runtime,
        "stream.enabled": False if args.no_stream else None,
        "stream.forward.enabled": args.forward,
    }
    if args.aalto_model:
        overrides["aalto.enabled"] = True
        overrides["aalto.model"] = args.aalto_model
    config = resolve_config(InferenceConfig, args, overrides)
    if isinstance(config, int):
        return config
    from services.inference.service import InferenceService

    stop = StopEvent.install()
    try:
        service = InferenceService(config, new_registry())
    except (OSError, ValueError) as exc:
        print(f"edgeloop serve: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        service.start()
        stop.wait()
    finally:
        service.stop()
    return EXIT_OK
