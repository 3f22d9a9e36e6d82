"""``edgeloop train``: a one-shot job (Kubernetes Job/CronJob) with meaningful exit codes.

0 every model published (or built, without --registry); 1 training or a gate failed;
2 bad configuration or input data; 3 registry unreachable; 4 signing key missing.
Nothing is published unless every model of the run passed.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from services.common.cli import base_parser, resolve_config
from services.trainer.config import TrainerSettings
from services.trainer.errors import ExitCode

log = logging.getLogger("edgeloop.train")


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def parser() -> argparse.ArgumentParser:
    p = base_parser("edgeloop train", __doc__.splitlines()[0] if __doc__ else None)
    run = p.add_argument_group("run")
    run.add_argument("--registry", help="registry URL (http://...) or a local store directory")
    run.add_argument("--signing-key", help="Ed25519 private key for a local store")
    run.add_argument("--out", help="where bundles, cards and reports go (default train-out)")
    run.add_argument("--threads", type=int, help="TensorFlow threads (default 2)")
    run.add_argument("--seed", type=int)
    run.add_argument("--metrics-file", help="write Prometheus metrics here (textfile format)")
    run.add_argument("--runtimes", help="parity runtimes, comma-separated "
                     "(default tensorflow,litert,tflite_runtime,tflm)")
    m = p.add_argument_group("one model (or [[models]] in --config)")
    m.add_argument("--task", choices=["forecast", "regress", "classify"])
    m.add_argument("--source", help="csv:PATH, ei:DIR or a storage URL")
    m.add_argument("--name", help="model name (default <target>-<task>)")
    m.add_argument("--target", help="field to predict (forecast, regress)")
    m.add_argument("--fields", help="input fields, comma-separated")
    m.add_argument("--single-input", help="regress: column of the single-variable models")
    m.add_argument("--time-column")
    m.add_argument("--start", help="storage: ISO 8601 or ns")
    m.add_argument("--end", help="storage: ISO 8601 or ns")
    m.add_argument("--devices", help="storage: device ids, comma-separated")
    m.add_argument("--window", type=int)
    m.add_argument("--horizon", type=int)
    m.add_argument("--stride", type=int)
    m.add_argument("--model", choices=["mlp", "ar", "persistence"], help="forecast model")
    m.add_argument("--hidden", help="hidden layer sizes, e.g. 12,8")
    m.add_argument("--epochs", type=int)
    m.add_argument("--batch-size", type=int)
    m.add_argument("--patience", type=int)
    m.add_argument("--learning-rate", type=float)
    m.add_argument("--test-fraction", type=float)
    m.add_argument("--gate-tolerance", type=float)
    m.add_argument("--no-fallback", action="store_true",
                   help="fail instead of publishing another candidate when the gate refuses")
    m.add_argument("--no-experiments", action="store_true",
                   help="forecast: skip the longer-horizon / extra-input table")
    m.add_argument("--cv-folds", type=int)
    return p


def _model_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.task is None:
        return None
    spec: dict[str, Any] = {
        "task": args.task, "source": args.source, "name": args.name, "target": args.target,
        "fields": _csv(args.fields), "single_input": args.single_input,
        "time_column": args.time_column, "start": args.start, "end": args.end,
        "devices": _csv(args.devices), "window": args.window, "horizon": args.horizon,
        "stride": args.stride, "model": args.model,
        "hidden": [int(h) for h in _csv(args.hidden) or []] or None,
        "epochs": args.epochs, "batch_size": args.batch_size, "patience": args.patience,
        "learning_rate": args.learning_rate, "test_fraction": args.test_fraction,
        "gate_tolerance": args.gate_tolerance, "cv_folds": args.cv_folds,
        "fallback": False if args.no_fallback else None,
        "experiments": False if args.no_experiments else None,
    }
    return {k: v for k, v in spec.items() if v is not None}


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        model = _model_flags(args)
        hidden_ok = True
    except ValueError:
        model, hidden_ok = None, False
    if not hidden_ok:
        print("edgeloop train: --hidden takes integers, e.g. 12,8")
        return ExitCode.CONFIG
    if model is not None and "source" not in model:
        print("edgeloop train: --task needs --source")
        return ExitCode.CONFIG
    overrides: dict[str, Any] = {
        "registry": args.registry, "signing_key": args.signing_key, "out": args.out,
        "threads": args.threads, "seed": args.seed, "metrics_file": args.metrics_file,
        "parity_runtimes": _csv(args.runtimes), "models": [model] if model else None,
    }
    config = resolve_config(TrainerSettings, args, overrides)
    if isinstance(config, int):
        return config
    from services.common.lifecycle import StopEvent
    from services.common.metrics import new_registry
    from services.trainer import stopping
    from services.trainer.run import run

    # SIGTERM (a deleted or timed-out Job) stops the run at the next epoch, model or
    # publish; what is not yet published stays unpublished.
    stopping.STOP = StopEvent.install()
    return int(run(config, new_registry(process_metrics=False)))
