"""``edgeloop``: one command, one subcommand per service.

Each subcommand lives in its own package and is imported only when used, so
``edgeloop serve`` never imports TensorFlow and ``edgeloop train`` never imports
tflite_runtime.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

#: subcommand -> (module with ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "collector": ("services.collector.cli", "read a serial device, a simulator or a CSV; publish"),
    "ingest": ("services.ingest.cli", "store telemetry from MQTT (SQLite, InfluxDB 1.x/2.x)"),
    "train": ("services.trainer.cli", "train, evaluate, convert, sign and publish models"),
    "registry": ("services.trainer.registry.cli", "the model registry: keys, serve, promote"),
    "serve": ("services.inference.cli", "edge inference: MQTT request/response, HTTP, alerts"),
    "device": ("services.device.cli", "talk to firmware over serial: info, update-model"),
    "broker": ("services.broker.cli", "render Mosquitto config, passwords, ACL and certs"),
    "demo": ("services.demo.cli", "run the whole loop on this machine and write a report"),
    "contract": ("services.contract.cli", "write or check the generated JSON Schemas"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: edgeloop <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `edgeloop <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"edgeloop {version('edgeloop')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"edgeloop: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    entry: Callable[[list[str]], int] = module.main
    return int(entry(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
