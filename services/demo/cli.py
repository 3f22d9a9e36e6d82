"""``edgeloop demo``: the whole loop on this machine, on embedded defaults.

Two replayed workshop boards and an accelerometer stream into storage; the trainer
builds a forecaster and a free-fall classifier from what was stored, signs and publishes
them; the edge hot-loads them, catches an injected fire and a free fall, and answers
predictions. Ends with a summary and demo-report/index.html.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from services.common.logs import setup_logging
from services.demo.console import Console
from services.demo.run import Demo, DemoOptions


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgeloop demo", description=__doc__)
    p.add_argument("--duration", type=float, default=20.0,
                   help="seconds to keep watching the live stream at the end (default 20)")
    p.add_argument("--speed", type=float, default=200.0,
                   help="replay speed-up of the workshop boards (default 200: 67 readings/s)")
    p.add_argument("--live-speed", type=float, default=20.0,
                   help="replay speed once the models serve (default 20: 7 readings/s)")
    p.add_argument("--train-rows", type=int, default=2500,
                   help="readings per board stored before training starts (default 2500)")
    p.add_argument("--requests", type=int, default=200,
                   help="prediction requests sent over MQTT and over HTTP (default 200)")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the stack up at the end and print its URLs")
    p.add_argument("--no-firmware", action="store_true", help="no firmware device in QEMU")
    p.add_argument("--embedded-broker", action="store_true",
                   help="use the in-process amqtt broker even if Mosquitto is installed")
    p.add_argument("--out", type=Path, default=Path("demo-report"), help="report folder")
    p.add_argument("--workdir", type=Path, default=Path("var/demo"),
                   help="state of this run (storage, registry, keys, logs); wiped first")
    p.add_argument("--fire-rate", type=float, default=1.5,
                   help="°C per reading the fire adds (default 1.5)")
    p.add_argument("--alert-relative", type=float, default=0.05,
                   help="alert when off the prediction by this fraction (workshop: 0.05)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.speed <= 0 or args.live_speed <= 0 or args.duration < 0 or args.train_rows < 200:
        print("edgeloop demo: --speed and --live-speed must be > 0, --duration >= 0, "
              "--train-rows >= 200",
              file=sys.stderr)
        return 2
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    log_path = args.workdir / "demo.log"
    log_file = log_path.open("a", buffering=1)
    setup_logging("INFO", stream=log_file)
    # Native libraries (LiteRT, TensorFlow) write to fd 2 directly: send that to the log
    # too, so the terminal shows only the demo's own words.
    os.dup2(log_file.fileno(), 2)
    # SIGTERM stops the demo like Ctrl-C does: through the same clean shutdown.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    console = Console()
    console.line(f"edgeloop demo · logs in {log_path} · {time.strftime('%Y-%m-%d %H:%M:%S')}")
    options = DemoOptions(
        duration_s=args.duration, speed=args.speed, keep_running=args.keep_running,
        firmware=not args.no_firmware, out_dir=args.out, workdir=args.workdir.resolve(),
        embedded_broker=args.embedded_broker, train_rows=args.train_rows,
        fire_c_per_row=args.fire_rate, alert_relative=args.alert_relative,
        requests=args.requests, live_speed=args.live_speed,
    )
    try:
        return Demo(options, console).run()
    except Exception as exc:  # stderr goes to the log: say it where the person looks
        console.line(f"edgeloop demo crashed: {exc!r} (traceback in {log_path})")
        logging.getLogger("edgeloop.demo").exception("demo crashed")
        return 1
