"""One training run: every model of the config trained, gated, bundled; then published.

All or nothing: bundles are published only once every model of the run has passed its
gates, so a CronJob never leaves the registry with half of a run.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, write_to_textfile

from services.contract.models import ModelTask
from services.trainer import stopping
from services.trainer.config import ModelSpec, TrainerSettings
from services.trainer.errors import ExitCode, TrainerError
from services.trainer.metrics import Outcome, TrainerMetrics
from services.trainer.package import c_export, final_card, write_model_bundle
from services.trainer.publish import Publisher, open_publisher, publish
from services.trainer.report import write_report

log = logging.getLogger(__name__)

TASK_MODULES = {
    ModelTask.FORECAST: "services.trainer.tasks.forecast",
    ModelTask.REGRESS: "services.trainer.tasks.regress",
    ModelTask.CLASSIFY: "services.trainer.tasks.classify",
}


@dataclass(frozen=True)
class Built:
    name: str
    task: ModelTask
    bundle: Path
    card_path: Path
    report: Path
    seconds: float
    metrics: dict[str, Any]
    sizes: dict[str, int]


def train_one(spec: ModelSpec, settings: TrainerSettings) -> Built:
    started = time.monotonic()
    name = spec.model_name
    out_dir = settings.out / name
    report_dir = out_dir / "report"
    shutil.rmtree(report_dir, ignore_errors=True)
    report_dir.mkdir(parents=True)
    log.info("%s: training a %s model from %s", name, spec.task.value, spec.source)
    task = importlib.import_module(TASK_MODULES[spec.task])
    result = task.run(spec, settings, report_dir, list(settings.parity_runtimes))
    card = final_card(result.checked, n_vectors=spec.test_vectors, metrics=result.metrics,
                      baselines=result.baselines, data=result.data)
    c = c_export(result.checked.int8_model, card, out_dir / "c")
    sizes = dict(card.sizes)
    if c.array_bytes is not None:
        sizes["c_array_bytes"] = c.array_bytes
    if c.arena_bytes is not None:
        sizes["c_arena_bytes"] = c.arena_bytes
    for fname, data in c.files.items():
        sizes[f"{fname}_bytes"] = len(data)
    elapsed = time.monotonic() - started
    card = card.model_copy(update={"sizes": sizes, "metrics": {
        **card.metrics, "train_convert_seconds": round(elapsed, 2)}})
    notes = [c.note] if c.note else []
    report = write_report(report_dir, card, result, notes)
    card_path = out_dir / "card.json"
    card_path.write_bytes(card.to_json())
    bundle = write_model_bundle(card, result.checked, report_dir, c,
                                out_dir / f"{name}.bundle.tar")
    log.info("%s: bundle %s (%d bytes), report %s", name, bundle, bundle.stat().st_size, report)
    return Built(name, spec.task, bundle, card_path, report, elapsed, card.metrics, sizes)


def run(settings: TrainerSettings, registry: CollectorRegistry | None = None) -> int:
    metrics = TrainerMetrics(registry or CollectorRegistry())
    try:
        return _run(settings, metrics)
    finally:
        if settings.metrics_file is not None and registry is not None:
            settings.metrics_file.parent.mkdir(parents=True, exist_ok=True)
            write_to_textfile(str(settings.metrics_file), registry)


def _run(settings: TrainerSettings, metrics: TrainerMetrics) -> int:
    if not settings.models:
        log.error("no model to train: give --task/--source or a config with [[models]]")
        return ExitCode.CONFIG
    names = [m.model_name for m in settings.models]
    if len(set(names)) != len(names):
        log.error("model names must be unique in one run: %s", names)
        return ExitCode.CONFIG
    publisher: Publisher | None = None
    try:
        if settings.registry:
            token = settings.registry_token.get_secret_value() if settings.registry_token else None
            publisher = open_publisher(settings.registry, token=token,
                                       signing_key=settings.signing_key)
    except TrainerError as exc:
        log.error("%s", exc)
        return exc.exit_code
    built: list[Built] = []
    for spec in settings.models:
        try:
            b = train_one(spec, settings)
        except TrainerError as exc:
            metrics.models.labels(spec.task.value, Outcome.FAILED.value).inc()
            log.error("%s: %s", spec.model_name, exc)
            log.error("nothing published: %s failed (exit %d)", spec.model_name, exc.exit_code)
            return exc.exit_code
        built.append(b)
        metrics.seconds.labels(b.task.value).set(b.seconds)
        for kind, size in b.sizes.items():
            if kind.startswith("model_"):
                metrics.size.labels(b.task.value, kind.removeprefix("model_")
                                    .removesuffix("_bytes")).set(size)
    published: dict[str, Any] = {}
    if publisher is not None:
        for b in built:
            try:
                stopping.check("publishing")
                published[b.name] = publish(publisher, b.bundle)
            except TrainerError as exc:
                log.error("publishing %s failed: %s (already published: %s)", b.name, exc,
                          sorted(published) or "none")
                metrics.models.labels(b.task.value, Outcome.FAILED.value).inc()
                return exc.exit_code
            metrics.models.labels(b.task.value, Outcome.PUBLISHED.value).inc()
    else:
        for b in built:
            metrics.models.labels(b.task.value, Outcome.BUILT.value).inc()
        log.info("no --registry: bundles are in %s, publish them later with "
                 "`edgeloop registry publish`", settings.out)
    summary = {b.name: {"bundle": str(b.bundle), "card": str(b.card_path),
                        "report": str(b.report), "seconds": round(b.seconds, 2),
                        "sizes": b.sizes, "published": published.get(b.name)} for b in built}
    settings.out.mkdir(parents=True, exist_ok=True)
    (settings.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    metrics.last_success.set_to_current_time()
    return ExitCode.OK
