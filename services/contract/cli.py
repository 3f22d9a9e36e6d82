"""``edgeloop contract``: write or check the generated JSON Schemas."""

from __future__ import annotations

import argparse
import sys

from services.contract.schemas_io import SCHEMA_DIR, drifted_schemas, write_schemas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeloop contract", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("write-schemas", help=f"regenerate {SCHEMA_DIR}")
    sub.add_parser("check-schemas", help="exit 1 if the checked-in schemas drifted")
    args = parser.parse_args(argv)
    if args.action == "write-schemas":
        for path in write_schemas():
            print(path)
        return 0
    drift = drifted_schemas()
    if drift:
        print("schemas drifted from the models (run `edgeloop contract write-schemas`): "
              + ", ".join(drift), file=sys.stderr)
        return 1
    print("schemas match the models")
    return 0
