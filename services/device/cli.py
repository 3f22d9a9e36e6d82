"""``edgeloop device info|ping|update-model``: talk to edgeloop firmware over serial."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from services.common.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, base_parser, resolve_config
from services.device.config import DeviceSettings
from services.device.fetch import FetchError, fetch_model
from services.device.link import DeviceLink, LinkError
from services.device.update import UpdateError, update_device_model

log = logging.getLogger("services.device")


def _parser() -> argparse.ArgumentParser:
    p = base_parser("edgeloop device", "Talk to edgeloop firmware over a serial line.")
    p.add_argument("action", choices=["info", "ping", "update-model"])
    p.add_argument("--port", help="/dev/ttyACM0, a pty, or socket://127.0.0.1:PORT")
    p.add_argument("--baud", type=int)
    p.add_argument("--timeout", type=float, help="seconds to wait for a reply")
    p.add_argument("--model", help="update-model: a bundle file, or NAME[@VERSION] with "
                   "--registry")
    p.add_argument("--registry", help="registry URL (http://...) or local store directory")
    p.add_argument("--public-key", help="Ed25519 public key the bundle must be signed with")
    p.add_argument("--attempts", type=int, help="transfer attempts (each one resumes)")
    p.add_argument("--chunk", type=int, help="bytes per update frame (16..256)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    return p


def _overrides(a: argparse.Namespace) -> dict[str, Any]:
    return {"port": a.port, "baud": a.baud, "timeout_s": a.timeout, "registry": a.registry,
            "public_key": a.public_key, "attempts": a.attempts, "chunk": a.chunk}


def _print(doc: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, sort_keys=True))
    else:
        print(" ".join(f"{k}={v}" for k, v in doc.items()))


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    config = resolve_config(DeviceSettings, args, _overrides(args))
    if isinstance(config, int):
        return config
    if not config.port:
        print("edgeloop device: --port is required (or EDGELOOP_PORT)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.action == "update-model":
            if not args.model:
                print("edgeloop device update-model: --model is required", file=sys.stderr)
                return EXIT_CONFIG
            fetched = fetch_model(args.model, registry=config.registry,
                                  public_key=Path(config.public_key) if config.public_key
                                  else None)
            log.info("model %s v%d from %s (%d bytes, signature %s)", fetched.name,
                     fetched.version, fetched.source, len(fetched.blob),
                     "verified" if fetched.verified else "not checked: local file")
            result = update_device_model(config.port, fetched.blob, attempts=config.attempts,
                                         chunk=config.chunk, baud=config.baud,
                                         timeout_s=config.timeout_s,
                                         registry=CollectorRegistry())
            _print({"model": fetched.name, "version": fetched.version, **asdict(result)},
                   args.json)
            return EXIT_OK
        with DeviceLink(config.port, baud=config.baud, timeout_s=config.timeout_s) as link:
            if args.action == "ping":
                ok = link.ping()
                _print({"pong": ok}, args.json)
                return EXIT_OK if ok else EXIT_FAILED
            info = link.info()
            _print({k: v for k, v in asdict(info).items() if k != "extra"} | info.extra,
                   args.json)
            return EXIT_OK
    except (FetchError, UpdateError, LinkError) as exc:
        print(f"edgeloop device {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
