"""``regress``: the Aalto edge-ML pipeline's four models on chosen input columns.

1. single-variable linear regression (Normalization → Dense(1));
2. multi-variable linear regression;
3. and 4. Normalization → Dense(64, relu) → Dense(64, relu) → Dense(1) on one column and on
   all of them.

Rows are split in time order. All four are reported on the test split; the one with the
best validation RMSE is converted, checked and published. The card standardises the
columns before the model (one int8 input tensor has one scale, so pressure at ~1000 hPa
and humidity at ~50 % must be brought to a common range first); the Normalization layer
is kept as in the pipeline and adapts to what it is given.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.contract.card import ModelCard, Normalization, Pipeline
from services.contract.models import InputSpec, ModelTask
from services.modelkit.preprocess import prepare
from services.trainer import evaluate, plots
from services.trainer.config import ModelSpec, TrainerSettings
from services.trainer.datasets import Series
from services.trainer.errors import DataError
from services.trainer.package import Prepared, convert_and_check
from services.trainer.stats import field_range, mean_std, require_variation
from services.trainer.tasks.common import TaskResult, data_summary, load_series, md_table
from services.trainer.windowing import time_split

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
AALTO_HIDDEN = [64, 64]
#: Calibration reaches this many training standard deviations beyond the mean: readings
#: somewhat outside the training range still fit the int8 input.
CALIBRATION_SIGMAS = 6.0


@dataclass
class Fitted:
    name: str
    inputs: list[str]
    card: ModelCard
    model: Any
    history: dict[str, list[float]]
    val_rmse: float = float("nan")
    test: dict[str, float] | None = None


def _rows(series: Series, columns: list[str]) -> tuple[F64, F64]:
    ts = np.concatenate([s.ts for s in series.segments])
    vals = np.stack([np.concatenate([s.values[c] for s in series.segments]) for c in columns],
                    axis=1)
    order = np.argsort(ts, kind="stable")
    return ts[order], vals[order]


def run(spec: ModelSpec, settings: TrainerSettings, report_dir: Path,
        runtimes: list[Any]) -> TaskResult:
    started = time.monotonic()
    if spec.target is None:  # the config validator requires it; this narrows the type
        raise DataError("regress needs a target")
    target = spec.target
    inputs = [f for f in dict.fromkeys(spec.fields) if f != target]
    if not inputs:
        raise DataError("regress needs at least one input field besides the target")
    single = spec.single_input or inputs[0]
    if single not in inputs:
        raise DataError(f"single_input {single!r} is not one of the inputs {inputs}")
    series = load_series(spec, settings, [*inputs, target])
    ts, rows = _rows(series, [*inputs, target])
    split = time_split(len(rows), spec.test_fraction, spec.val_fraction)
    fit_idx = np.concatenate([split.train, split.val])
    require_variation(rows[fit_idx, -1], f"target {target!r}")
    ranges = {c: field_range(rows[fit_idx, j]) for j, c in enumerate([*inputs, target])}
    y_mean, y_std = mean_std(rows[split.train, -1:], 0, "target")
    y = ((rows[:, -1] - y_mean[0]) / y_std[0]).astype(np.float32)[:, None]
    from services.trainer import tfkit  # only now: bad input fails before TensorFlow loads

    tfkit.configure(settings.threads, settings.seed)
    hidden = spec.hidden or AALTO_HIDDEN
    plans = [("linear_single", [single], [], 0.1), ("linear_multi", inputs, [], 0.1),
             ("dnn_single", [single], hidden, spec.learning_rate),
             ("dnn_multi", inputs, hidden, spec.learning_rate)]
    fitted: list[Fitted] = []
    for name, cols, layers, lr in plans:
        idx = [inputs.index(c) for c in cols]
        x_mean, x_std = mean_std(rows[split.train][:, idx], 0, "inputs")
        card = ModelCard(
            name=spec.model_name, task=ModelTask.REGRESS, created=time.time_ns(),
            description=spec.description or (
                f"{target} from {', '.join(cols)} ({name.replace('_', ' ')}, Aalto pipeline)"),
            input=InputSpec(fields=cols, window=1, shape=[1, len(cols)], dtype="int8",
                            target=target, interval_s=series.interval_s),
            pipeline=Pipeline.COLUMNS, pipeline_params={"model": name},
            output_shape=[1, 1],
            normalization=Normalization(input_mean=x_mean, input_std=x_std,
                                        output_mean=y_mean, output_std=y_std),
            training_ranges={c: ranges[c] for c in [*cols, target]},
        )
        x = prepare(card, rows[:, idx])
        model = tfkit.normalized_net(len(cols), x[split.train], layers, name)
        fit = tfkit.fit(model, x[split.train], y[split.train], x[split.val], y[split.val],
                        label=f"{spec.model_name} {name}", epochs=spec.epochs,
                        batch_size=spec.batch_size, patience=spec.patience, learning_rate=lr,
                        loss="mae", seed=settings.seed)
        f = Fitted(name, cols, card, model, fit.history)
        pred = tfkit.predict(model, x).reshape(-1) * y_std[0] + y_mean[0]
        f.val_rmse = evaluate.regression(rows[split.val, -1], pred[split.val])["rmse"]
        f.test = evaluate.regression(rows[split.test, -1], pred[split.test])
        log.info("%s: %s validation RMSE %.4f, test RMSE %.4f (float)", spec.model_name, name,
                 f.val_rmse, f.test["rmse"])
        fitted.append(f)
    best = min(fitted, key=lambda f: f.val_rmse)
    log.info("%s: publishing %s (best validation RMSE %.4f)", spec.model_name, best.name,
             best.val_rmse)
    idx = [inputs.index(c) for c in best.inputs]
    x = prepare(best.card, rows[:, idx])
    calib = np.concatenate([x[split.train][np.linspace(0, len(split.train) - 1, 1000)
                                           .astype(int)],
                            np.full((2, len(idx)), 0.0, np.float32) + np.array(
                                [[-CALIBRATION_SIGMAS], [CALIBRATION_SIGMAS]], np.float32)])
    prep = Prepared(best.name, best.model, best.card, calib.astype(np.float32), x[split.test],
                    rows[split.test][:, idx], classification=False)
    chk = convert_and_check(prep, runtimes)
    truth = rows[split.test, -1]
    mean_pred = np.full_like(truth, float(rows[split.train, -1].mean()))
    metrics: dict[str, Any] = {
        "model": best.name, "test": evaluate.regression(truth, chk.int8_final[:, 0]),
        "test_float": evaluate.regression(truth, chk.tf_final[:, 0]),
        "candidates": {f.name: {"inputs": f.inputs, "val_rmse": f.val_rmse, **(f.test or {})}
                       for f in fitted},
        "unit": target,
    }
    baselines = {"training_mean": evaluate.regression(truth, mean_pred)}
    data = {**data_summary(series), "split": "time-ordered", "rows": len(rows),
            "train": int(split.train.size), "validation": int(split.val.size),
            "test": int(split.test.size)}
    result = TaskResult(chk, metrics, baselines, data)
    result.train_seconds = time.monotonic() - started
    plots.training_curve(best.history, report_dir / "training_curve.png",
                         f"{spec.model_name}: {best.name}")
    result.plots.append(("training_curve.png", f"Training curve ({best.name})"))
    plots.predictions(ts[split.test], truth, {f"{best.name} (int8)": chk.int8_final[:, 0]},
                      report_dir / "predictions.png", "test split", target)
    result.plots.append(("predictions.png", "Predictions against truth (test split)"))
    plots.scatter(truth, chk.int8_final[:, 0], report_dir / "scatter.png",
                  f"{best.name} vs truth")
    result.plots.append(("scatter.png", "Published model against truth"))
    rows_md: list[list[Any]] = [[f.name, ", ".join(f.inputs), f.val_rmse,
                                 (f.test or {}).get("mae", 0.0), (f.test or {}).get("rmse", 0.0)]
                                for f in fitted]
    rows_md.append(["training mean", "-", "", baselines["training_mean"]["mae"],
                    baselines["training_mean"]["rmse"]])
    rows_md.append([f"published: {best.name} (int8)", ", ".join(best.inputs), best.val_rmse,
                    metrics["test"]["mae"], metrics["test"]["rmse"]])
    result.sections.append(
        "## The four Aalto models (time-ordered split)\n\n"
        + md_table(["model", "inputs", "validation RMSE", "test MAE", "test RMSE"], rows_md)
        + "\n")
    return result
