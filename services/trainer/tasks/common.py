"""What every task shares: loading a time series from the spec's source, the result type."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.trainer.config import ModelSpec, TrainerSettings
from services.trainer.datasets import Series, load_csv, load_storage, parse_source
from services.trainer.errors import DataError
from services.trainer.package import Checked


@dataclass
class TaskResult:
    checked: Checked
    metrics: dict[str, Any]
    baselines: dict[str, Any]
    data: dict[str, Any]
    #: Markdown sections for the report, in order.
    sections: list[str] = field(default_factory=list)
    #: Plot files (in the report directory) with their captions.
    plots: list[tuple[str, str]] = field(default_factory=list)
    train_seconds: float = 0.0


def load_series(spec: ModelSpec, settings: TrainerSettings, fields: list[str]) -> Series:
    kind, where = parse_source(spec.source)
    if kind == "csv":
        return load_csv(Path(where), fields, time_column=spec.time_column,
                        gap_factor=spec.gap_factor)
    if kind == "storage":
        secrets: dict[str, Any] = {}
        if settings.storage_token is not None:
            secrets["token"] = settings.storage_token.get_secret_value()
        if settings.storage_username is not None:
            secrets["username"] = settings.storage_username
        if settings.storage_password is not None:
            secrets["password"] = settings.storage_password.get_secret_value()
        return load_storage(where, fields, start=spec.start, end=spec.end,
                            devices=spec.devices, gap_factor=spec.gap_factor, secrets=secrets)
    raise DataError(f"task {spec.task.value} needs a time series (csv:PATH or a storage URL), "
                    f"not {spec.source!r}")


def data_summary(series: Series) -> dict[str, Any]:
    start, end = series.start_end()
    return {
        "source": series.source,
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
        "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end)),
        "samples": series.samples,
        "segments": len(series.segments),
        "gaps": series.gaps,
        "interval_s": series.interval_s,
        "devices": sorted({s.device for s in series.segments}),
    }


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
