"""Shared pieces of every service's command line: --config, --validate-config, logging."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from services.common.config import ConfigError, describe, load_config
from services.common.logs import setup_logging

C = TypeVar("C", bound=BaseModel)

#: Exit codes shared by every edgeloop command (a k8s Job's status reads them).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2


def base_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", type=Path, help="TOML or JSON config file "
                        "(also EDGELOOP_CONFIG)")
    parser.add_argument("--validate-config", action="store_true",
                        help="check the configuration, print it (secrets masked) and exit")
    parser.add_argument("--log-level", default=None,
                        help="DEBUG, INFO, WARNING or ERROR (also EDGELOOP_LOG_LEVEL)")
    return parser


def resolve_config(
    model: type[C], args: argparse.Namespace, overrides: Mapping[str, Any]
) -> C | int:
    """Load the config; on --validate-config or an error return the exit code to use."""
    try:
        config = load_config(model, file=args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"{sys.argv[0]}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.validate_config:
        print(describe(config))
        print("configuration is valid", file=sys.stderr)
        return EXIT_OK
    level = args.log_level or getattr(config, "log_level", None) or "INFO"
    setup_logging(str(level))
    return config
