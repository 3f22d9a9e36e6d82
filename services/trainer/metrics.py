"""Prometheus metrics of a training run (a one-shot job: written to a textfile at the end)."""

from __future__ import annotations

import enum

from prometheus_client import CollectorRegistry, Counter, Gauge


class Outcome(enum.StrEnum):
    PUBLISHED = "published"
    BUILT = "built"  # bundle written, not published (no registry given)
    FAILED = "failed"


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.models = Counter("edgeloop_trainer_models_total",
                              "Models trained in this run, by task and outcome",
                              ["task", "outcome"], registry=registry)
        self.seconds = Gauge("edgeloop_trainer_model_seconds",
                             "Wall time to train, convert and check the last model of a task",
                             ["task"], registry=registry)
        self.size = Gauge("edgeloop_trainer_model_bytes",
                          "Size of the last model of a task", ["task", "kind"],
                          registry=registry)
        self.last_success = Gauge("edgeloop_trainer_last_success_timestamp_seconds",
                                  "When a run last finished with every model published or built",
                                  registry=registry)
