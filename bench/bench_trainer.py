"""Trainer: train + convert + parity time and peak memory per task, and model sizes.

Each task runs ``edgeloop train`` in a fresh process (as a Kubernetes Job would), on the
real recordings. The baseline, measured in the same run, is a process that only imports
TensorFlow: the floor under every task's time and memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"

RUNNER = """
import json, resource, sys
from services.trainer.cli import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""
BASELINE = """
import json, os, resource
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow
print(json.dumps({"rc": 0, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _task_args(quick: bool) -> dict[str, list[str]]:
    workshop = f"csv:{DATA / 'aiot-workshop' / 'aiot_workshop_data.csv'}"
    epochs = ["--epochs", "10"] if quick else []
    return {
        "forecast": ["--task", "forecast", "--source", workshop, "--target", "temp",
                     *epochs, *(["--no-experiments"] if quick else [])],
        "regress": ["--task", "regress", "--source", workshop, "--target", "humidity",
                    "--fields", "temp,pressure", *epochs],
        "classify": ["--task", "classify", "--source", f"ei:{DATA / 'free-fall'}", *epochs,
                     *(["--cv-folds", "2"] if quick else [])],
    }


def _measure(code: str, args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, timeout=1800, check=False)
    seconds = time.monotonic() - started
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"no result (exit {proc.returncode}): {proc.stderr[-500:]}")
    out: dict[str, Any] = json.loads(lines[-1])
    if out["rc"] != 0:
        raise RuntimeError(f"exit {out['rc']}: {proc.stderr[-800:]}")
    # Peak RSS of the training process itself; the runtime workers are small separate
    # processes (their ru_maxrss would include the forked parent's pages before exec).
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(out["maxrss_kib"] / 1024, 1)}


def run(quick: bool) -> dict[str, Any]:
    results: dict[str, Any] = {
        "baseline_import_tensorflow": _measure(BASELINE, []),
        "threads": 2,
    }
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        for task, args in _task_args(quick).items():
            out = Path(tmp) / task
            res = _measure(RUNNER, [*args, "--threads", "2", "--out", str(out)])
            summary = json.loads((out / "summary.json").read_text())
            [(name, info)] = summary.items()
            card = json.loads(Path(info["card"]).read_text())
            res.update({
                "model": name,
                "published_candidate": card["metrics"].get("model"),
                "train_convert_seconds_in_process": card["metrics"].get(
                    "train_convert_seconds"),
                "sizes": card["sizes"],
                "bundle_bytes": Path(info["bundle"]).stat().st_size,
            })
            if task == "forecast":
                res["test_rmse"] = {"published_int8": card["metrics"]["test"]["rmse"],
                                    **{k: v["rmse"] for k, v in card["baselines"].items()}}
            elif task == "regress":
                res["test_rmse"] = {k: v["rmse"] for k, v in
                                    card["metrics"]["candidates"].items()}
                res["test_rmse"]["published_int8"] = card["metrics"]["test"]["rmse"]
            else:
                res["cv_accuracy"] = card["metrics"]["cv"]["accuracy_mean"]
                res["test_accuracy_int8"] = card["metrics"]["test"]["accuracy"]
            results[task] = res
            print(f"bench trainer: {task} {res['seconds']} s, peak {res['peak_rss_mib']} MiB",
                  flush=True)
    base = results["baseline_import_tensorflow"]
    for task in ("forecast", "regress", "classify"):
        results[task]["seconds_over_baseline"] = round(results[task]["seconds"]
                                                       - base["seconds"], 1)
        results[task]["rss_over_baseline_mib"] = round(results[task]["peak_rss_mib"]
                                                       - base["peak_rss_mib"], 1)
    return results
