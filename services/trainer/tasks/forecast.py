"""``forecast``: the next value of a field from the previous N, with an honest baseline.

Candidates: the workshop MLP (or the hidden sizes asked for), a linear AR(N) fitted by
least squares, and persistence, each as a TFLite model. The requested one is published
if its int8 test RMSE passes the baseline gate; otherwise (with ``fallback``) the best
of the others that passes, in order of validation RMSE.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.contract.card import FieldRange, ModelCard, Normalization, Pipeline
from services.contract.models import InputSpec, ModelTask
from services.modelkit.preprocess import finish, prepare
from services.trainer import evaluate, plots
from services.trainer.config import ForecastModel, ModelSpec, TrainerSettings
from services.trainer.datasets import Series
from services.trainer.errors import DataError, GateError
from services.trainer.gate import GateDecision, baseline_gate
from services.trainer.package import Checked, Prepared, convert_and_check
from services.trainer.stats import field_range, require_variation
from services.trainer.tasks.common import TaskResult, data_summary, load_series, md_table
from services.trainer.windowing import LookBack, TimeSplit, lookback_windows, time_split

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
WORKSHOP_HIDDEN = [12, 8]
EXTRA_FIELDS = ("humidity", "pressure")


@dataclass
class Candidate:
    kind: ForecastModel
    model: Any  # keras.Model
    history: dict[str, list[float]]
    val_rmse: float = math.nan
    test_pred: F64 = field(default_factory=lambda: np.zeros(0))


def _target(spec: ModelSpec) -> str:
    if spec.target is None:  # the config validator requires it; this narrows the type
        raise DataError("forecast needs a target field")
    return spec.target


def _fields(spec: ModelSpec) -> list[str]:
    return [_target(spec), *[f for f in dict.fromkeys(spec.fields) if f != spec.target]]


def _card(spec: ModelSpec, series: Series, fields: list[str], window: int,
          ranges: dict[str, FieldRange], mean: list[float], std: list[float]) -> ModelCard:
    nf = len(fields)
    shape = [1, window] if nf == 1 else [1, window, nf]
    return ModelCard(
        name=spec.model_name, task=ModelTask.FORECAST, created=time.time_ns(),
        description=spec.description or (
            f"{spec.target} {spec.horizon} step(s) ahead from the last {window} samples of "
            f"{', '.join(fields)}"),
        input=InputSpec(fields=fields, window=window, shape=shape, dtype="int8",
                        target=spec.target, interval_s=series.interval_s),
        pipeline=Pipeline.WINDOW,
        pipeline_params={"horizon": spec.horizon,
                         "horizon_s": spec.horizon * series.interval_s},
        output_shape=[1, 1],
        normalization=Normalization(input_mean=mean, input_std=std,
                                    output_mean=[mean[0]], output_std=[std[0]]),
        training_ranges=ranges,
    )


def _raw(lb: LookBack) -> F64:
    return lb.x[:, :, 0] if lb.x.shape[2] == 1 else lb.x


def _ar_weights(x: F32, y: F32) -> tuple[F32, float]:
    flat = x.reshape(len(x), -1).astype(np.float64)
    a = np.hstack([flat, np.ones((len(flat), 1))])
    coef, *_ = np.linalg.lstsq(a, y.astype(np.float64).ravel(), rcond=None)
    return coef[:-1].astype(np.float32), float(coef[-1])


#: int8 steps on each side of the centre: the full int8 range, scale 1 after normalisation.
INT8_HALF = 127.5


def grid_normalization(values: F64, rng: FieldRange) -> tuple[float, float, bool]:
    """Mean and std for one field that make its int8 input lossless where possible.

    Sensors report on a grid (0.0625 °C for the workshop board's thermometer). With
    ``std`` = the grid step and ``mean`` on the grid, every normalised reading is an
    integer, and calibrating the int8 input on [-128, 127] makes its scale exactly 1: the
    int8 tensor holds readings without rounding over 255 steps (16 °C here), wide enough
    for a test period warmer than the training one. Without a grid (or a span too wide
    for it), the std spreads 1.5 x the training span over the int8 range.
    """
    span = max(rng.max - rng.min, 1e-9)
    mid = (rng.max + rng.min) / 2
    step = rng.step
    if step is not None and step > 0:
        on_grid = np.abs(values / step - np.round(values / step)).max() < 1e-3
        k = int(np.ceil(1.5 * span / (255 * step)))
        if on_grid:
            std = step * k
            return float(np.round(mid / std) * std), float(std), k == 1
    return float(mid), float(1.5 * span / 255), False


def representative(x: F32, n: int = 1000) -> F32:
    """Calibration inputs: an even sample of the training windows plus two constant windows
    at the ends of the int8 range, so the input scale is 1 (see grid_normalization)."""
    idx = np.linspace(0, len(x) - 1, num=min(n, len(x))).astype(int)
    edges = np.stack([np.full(x.shape[1:], -128.0), np.full(x.shape[1:], 127.0)])
    return np.concatenate([x[idx], edges.astype(np.float32)])


def _predict_final(card: ModelCard, model: Any, x: F32) -> F64:
    from services.trainer import tfkit

    return finish(card, tfkit.predict(model, x).reshape(len(x), -1))[:, 0]


def run(spec: ModelSpec, settings: TrainerSettings, report_dir: Path,
        runtimes: list[Any]) -> TaskResult:
    """Train, gate and convert a forecaster."""
    target = _target(spec)
    started = time.monotonic()
    fields = _fields(spec)
    window = spec.window or 10
    series = load_series(spec, settings, fields)
    lb = lookback_windows(series, fields, target, window, spec.horizon)
    split = time_split(len(lb), spec.test_fraction, spec.val_fraction)
    fit_idx = np.concatenate([split.train, split.val])
    ranges = {f: field_range(lb.x[fit_idx][:, -1, j]) for j, f in enumerate(fields)}
    require_variation(lb.y[fit_idx], f"target {spec.target!r}")
    grid = [grid_normalization(lb.x[fit_idx][:, -1, j], ranges[f]) for j, f in enumerate(fields)]
    mean, std = [g[0] for g in grid], [g[1] for g in grid]
    card = _card(spec, series, fields, window, ranges, mean, std)
    card = card.model_copy(update={"pipeline_params": {
        **card.pipeline_params, "lossless_int8_input": {f: g[2] for f, g in zip(
            fields, grid, strict=True)}}})
    x = prepare(card, _raw(lb))
    y = ((lb.y - mean[0]) / std[0]).astype(np.float32)[:, None]
    log.info("%s: %d windows (%d train / %d validation / %d test), %d segment(s)",
             card.name, len(lb), len(split.train), len(split.val), len(split.test),
             len(series.segments))

    # TensorFlow is imported only now: bad input fails in a second, before it loads.
    from services.trainer import tfkit

    tfkit.configure(settings.threads, settings.seed)
    shape = list(x.shape[1:])
    nflat = int(np.prod(shape))
    w_persist = np.zeros(nflat, np.float32)
    w_persist[(window - 1) * len(fields)] = 1.0  # the target's last value (field 0)
    w_ar, b_ar = _ar_weights(x[fit_idx], y[fit_idx])
    hidden = spec.hidden or WORKSHOP_HIDDEN
    mlp = tfkit.mlp(shape, hidden, name="mlp")
    hist = tfkit.fit(mlp, x[split.train], y[split.train], x[split.val], y[split.val],
                     label=f"{card.name} mlp", epochs=spec.epochs, batch_size=spec.batch_size,
                     patience=spec.patience, learning_rate=spec.learning_rate,
                     seed=settings.seed).history
    candidates = {
        ForecastModel.MLP: Candidate(ForecastModel.MLP, mlp, hist),
        ForecastModel.AR: Candidate(ForecastModel.AR, tfkit.linear(shape, w_ar, b_ar, "ar"), {}),
        ForecastModel.PERSISTENCE: Candidate(
            ForecastModel.PERSISTENCE, tfkit.linear(shape, w_persist, 0.0, "persistence"), {}),
    }
    truth_val, truth_test = lb.y[split.val], lb.y[split.test]
    for c in candidates.values():
        c.val_rmse = evaluate.regression(truth_val, _predict_final(card, c.model, x[split.val]))[
            "rmse"]
        c.test_pred = _predict_final(card, c.model, x[split.test])
    persistence = evaluate.regression(truth_test, lb.last[split.test])
    baselines: dict[str, Any] = {
        "persistence": persistence,
        "workshop_mlp" if hidden == WORKSHOP_HIDDEN else "mlp": {
            **evaluate.regression(truth_test, candidates[ForecastModel.MLP].test_pred),
            "hidden": hidden, "epochs_run": len(hist.get("loss", []))},
        f"ar{window}": evaluate.regression(truth_test, candidates[ForecastModel.AR].test_pred),
    }
    for name, m in baselines.items():
        log.info("%s: test RMSE %s %.4f, MAE %.4f (float, TensorFlow)", card.name, name,
                 m["rmse"], m["mae"])

    order = [spec.model]
    if spec.fallback:
        order += sorted((k for k in candidates if k is not spec.model),
                        key=lambda k: candidates[k].val_rmse)
    decisions: list[GateDecision] = []
    chosen: tuple[Candidate, Checked, dict[str, float]] | None = None
    for kind in order:
        cand = candidates[kind]
        prep = Prepared(kind.value, cand.model, card, representative(x[fit_idx]), x[split.test],
                        _raw(lb.take(split.test)), classification=False)
        chk = convert_and_check(prep, runtimes)
        int8_metrics = evaluate.regression(truth_test, chk.int8_final[:, 0])
        decision = baseline_gate(kind.value, int8_metrics["rmse"], persistence["rmse"],
                                 spec.gate_tolerance)
        decisions.append(decision)
        log.info("%s: %s (int8 model)", card.name, decision.describe())
        if not chk.passed:
            log.warning("%s: %s fails the parity gate: %s", card.name, kind.value,
                        chk.parity.summary())
            continue
        if decision.passed:
            chosen = (cand, chk, int8_metrics)
            break
    if chosen is None:
        raise GateError(f"{card.name}: no candidate passed the gates: "
                        + "; ".join(d.describe() for d in decisions))
    cand, chk, int8_metrics = chosen
    if cand.kind is not spec.model:
        log.warning("%s: publishing %s instead of the requested %s", card.name,
                    cand.kind.value, spec.model.value)
    metrics: dict[str, Any] = {
        "model": cand.kind.value,
        "test": int8_metrics,
        "test_float": evaluate.regression(truth_test, chk.tf_final[:, 0]),
        "persistence": persistence,
        "gate": [d.to_dict() for d in decisions],
        "requested": spec.model.value,
        "unit": spec.target,
    }
    result = TaskResult(chk, metrics, baselines, {**data_summary(series), **_split_info(
        lb, split)})
    result.train_seconds = time.monotonic() - started
    _report(result, spec, card, lb, split, candidates, cand, decisions, report_dir)
    if spec.experiments:
        result.sections.append(_experiments(spec, settings, fields, window))
    return result


def _split_info(lb: LookBack, split: TimeSplit) -> dict[str, Any]:
    def when(i: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(lb.t[i])))

    return {"split": "time-ordered", "windows": len(lb), "train": int(split.train.size),
            "validation": int(split.val.size), "test": int(split.test.size),
            "test_start": when(int(split.test[0])), "test_end": when(int(split.test[-1]))}


def _report(result: TaskResult, spec: ModelSpec, card: ModelCard, lb: LookBack,
            split: TimeSplit, candidates: dict[ForecastModel, Candidate], chosen: Candidate,
            decisions: list[GateDecision], report_dir: Path) -> None:
    truth = lb.y[split.test]
    t = lb.t[split.test]
    mlp = candidates[ForecastModel.MLP]
    if mlp.history:
        plots.training_curve(mlp.history, report_dir / "training_curve.png",
                             f"{card.name}: MLP training")
        result.plots.append(("training_curve.png", "MLP training and validation loss"))
    preds: dict[str, F64] = {f"published ({chosen.kind.value}, int8)":
                             result.checked.int8_final[:, 0]}
    if chosen.kind is not ForecastModel.MLP and mlp.test_pred.size:
        preds["MLP (float)"] = mlp.test_pred
    plots.predictions(t, truth, preds, report_dir / "predictions.png",
                      f"{card.name}: test split", spec.target or "")
    result.plots.append(("predictions.png", "Predictions against truth (start of the test "
                                            "split)"))
    plots.scatter(truth, result.checked.int8_final[:, 0], report_dir / "scatter.png",
                  "published model vs truth")
    result.plots.append(("scatter.png", "Published model against truth"))
    rows = [[name, m["mae"], m["rmse"]] for name, m in result.baselines.items()]
    rows.append([f"published: {chosen.kind.value} (int8)", result.metrics["test"]["mae"],
                 result.metrics["test"]["rmse"]])
    gate = "\n".join(f"- {d.describe()}" for d in decisions)
    result.sections.append(
        "## Test split (time-ordered, newest data)\n\n"
        + md_table(["model", "MAE", "RMSE"], rows)
        + f"\n\nBaseline gate (tolerance {spec.gate_tolerance:g}):\n\n{gate}\n")


def _experiments(spec: ModelSpec, settings: TrainerSettings, fields: list[str],
                 window: int) -> str:
    """Where a learned model can earn its place: longer horizons, more inputs."""
    target = _target(spec)
    extras = [f for f in EXTRA_FIELDS if f not in fields]
    try:
        series = load_series(spec, settings, fields + extras)
    except DataError:
        extras = []
        series = load_series(spec, settings, fields)
    rows: list[list[Any]] = []
    horizons = sorted({spec.horizon, 1, 20, 100})
    input_sets: list[tuple[str, list[str], bool]] = [(", ".join(fields), fields, False)]
    if extras:
        input_sets.append((", ".join(fields + extras), fields + extras, False))
    input_sets.append((", ".join(fields + extras) + ", time of day", fields + extras, True))
    log.info("%s: experiments on %d horizons x %d input sets", spec.model_name,
             len(horizons), len(input_sets))
    for h in horizons:
        for label, inputs, tod in input_sets:
            try:
                lb = lookback_windows(series, inputs, target, window, h)
                split = time_split(len(lb), spec.test_fraction, spec.val_fraction)
            except DataError as exc:
                log.info("experiment h=%d %s skipped: %s", h, label, exc)
                continue
            scores = _experiment(lb, split, tod, spec, settings)
            best = ["persistence", f"AR({window})", "MLP"][int(np.argmin(scores))]
            rows.append([h, f"{h * series.interval_s:g} s", label, *scores, best])
    header = ["horizon (steps)", "ahead", "inputs", "persistence RMSE", f"AR({window}) RMSE",
              "MLP RMSE", "best"]
    return ("## Longer horizons and extra inputs (float models, same split)\n\n"
            + md_table(header, rows)
            + "\n\nOne step ahead the series moves in sensor-resolution steps and persistence "
              "sits near the floor. A learned model can only earn its place where the table "
              "says so; inputs whose test-period values leave their training range (check "
              "the card's training ranges) make it extrapolate.\n")


def _experiment(lb: LookBack, split: TimeSplit, tod: bool, spec: ModelSpec,
                settings: TrainerSettings) -> list[float]:
    fit_idx = np.concatenate([split.train, split.val])
    mean = lb.x[fit_idx].mean(axis=(0, 1))
    std = np.where(lb.x[fit_idx].std(axis=(0, 1)) > 1e-9, lb.x[fit_idx].std(axis=(0, 1)), 1.0)
    x = ((lb.x - mean) / std).reshape(len(lb), -1)
    if tod:
        phase = 2 * np.pi * (lb.t % 86400) / 86400
        x = np.hstack([x, np.sin(phase)[:, None], np.cos(phase)[:, None]])
    x = x.astype(np.float32)
    y = ((lb.y - mean[0]) / std[0]).astype(np.float32)[:, None]
    truth = lb.y[split.test]
    persistence = evaluate.regression(truth, lb.last[split.test])["rmse"]
    w, b = _ar_weights(x[fit_idx], y[fit_idx])
    ar = evaluate.regression(truth, (x[split.test] @ w + b) * std[0] + mean[0])["rmse"]
    from services.trainer import tfkit

    tfkit.configure(settings.threads, settings.seed)
    model = tfkit.mlp([x.shape[1]], spec.hidden or WORKSHOP_HIDDEN, name="mlp_experiment")
    tfkit.fit(model, x[split.train], y[split.train], x[split.val], y[split.val],
              label="experiment mlp", epochs=min(spec.epochs, 40), batch_size=256,
              patience=4, learning_rate=max(spec.learning_rate, 3e-3))
    pred = tfkit.predict(model, x[split.test])[:, 0] * std[0] + mean[0]
    return [persistence, ar, evaluate.regression(truth, pred)["rmse"]]
