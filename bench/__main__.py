"""``python -m bench [name ...] [--quick]``: run benchmarks, write JSON results."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help="bench names (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for smoke runs")
    args = parser.parse_args()
    available = sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))
    names = args.names or available
    RESULTS.mkdir(exist_ok=True)
    failed = 0
    for name in names:
        if name not in available:
            print(f"bench: no bench named {name!r} (have: {', '.join(available)})")
            return 2
        print(f"bench: {name} ...", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        started = time.time()
        try:
            result = module.run(quick=args.quick)
        except Exception as exc:  # a failing bench is reported, the others still run
            print(f"bench: {name} FAILED: {exc!r}")
            failed += 1
            continue
        doc = {
            "bench": name,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1),
            "machine": machine(),
            "quick": args.quick,
            "results": result,
        }
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"bench: {name} -> {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
