"""Trainer configuration: run-wide settings plus one :class:`ModelSpec` per model.

A config file (TOML or JSON) can list several models (``[[models]]`` tables) for one run;
the command line describes one model with ``--task/--source/...``.
"""

from __future__ import annotations

import enum
from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from services.common.config import Settings
from services.contract.models import Id, ModelTask


class ForecastModel(enum.StrEnum):
    #: The Arm AIoT workshop's MLP: Dense(12, relu) → Dense(8, relu) → Dense(1).
    MLP = "mlp"
    #: Linear autoregression on the window, fitted by least squares.
    AR = "ar"
    #: Next value = last value.
    PERSISTENCE = "persistence"


class Runtime(enum.StrEnum):
    TENSORFLOW = "tensorflow"
    LITERT = "litert"
    TFLITE_RUNTIME = "tflite_runtime"
    TFLM = "tflm"


class ModelSpec(Settings):
    name: Id | None = None
    task: ModelTask
    #: ``csv:PATH``, ``ei:DIR`` or a storage URL (``sqlite:///x.db``, ``influxdb://...``).
    source: str = Field(min_length=1)
    description: str = ""
    # Storage selection.
    start: str | None = None
    end: str | None = None
    devices: list[str] | None = None
    # What to learn.
    target: Id | None = None
    #: Forecast: input fields (default: the target). Regress: input columns.
    #: Classify: accelerometer axes (default: the recordings' sensors).
    fields: list[Id] = Field(default_factory=list)
    #: Regress: the column of the two single-variable models (default: first field).
    single_input: Id | None = None
    time_column: str | None = None
    window: int | None = Field(default=None, ge=1)
    horizon: int = Field(default=1, ge=1)
    stride: int = Field(default=16, ge=1)
    #: A time step longer than gap_factor x the median interval starts a new segment.
    gap_factor: float = Field(default=10.0, gt=1.0)
    model: ForecastModel = ForecastModel.MLP
    #: Hidden layer sizes (default per task: forecast (12, 8) as in the workshop,
    #: regress (64, 64) as in the Aalto pipeline, classify (20, 10) as in Edge Impulse).
    hidden: list[int] | None = None
    epochs: int = Field(default=60, ge=1)
    batch_size: int = Field(default=64, ge=1)
    patience: int = Field(default=6, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    test_fraction: float = Field(default=0.2, gt=0, lt=0.9)
    val_fraction: float = Field(default=0.1, gt=0, lt=0.5)
    #: Baseline gate: the published forecaster's test RMSE may exceed persistence's by
    #: at most this fraction.
    gate_tolerance: float = Field(default=0.05, ge=0)
    #: When the requested forecaster fails the gate, publish the best candidate that passes.
    fallback: bool = True
    #: Forecast: also measure longer horizons and extra inputs (a table in the report).
    experiments: bool = True
    cv_folds: int = Field(default=5, ge=2)
    test_vectors: int = Field(default=5, ge=1, le=64)

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.task in (ModelTask.FORECAST, ModelTask.REGRESS) and not self.target:
            raise ValueError(f"task {self.task.value} needs a target field")
        if self.task is ModelTask.REGRESS and not self.fields:
            raise ValueError("task regress needs input fields")
        return self

    @property
    def model_name(self) -> str:
        if self.name:
            return self.name
        return f"{self.target or 'accel'}-{self.task.value}"


class TrainerSettings(Settings):
    log_level: str = "INFO"
    #: A registry URL (``http://host:port``) or a directory holding a local store.
    registry: str | None = None
    #: Token for the registry's write endpoints (env EDGELOOP_REGISTRY_TOKEN).
    registry_token: SecretStr | None = None
    #: Ed25519 private key used to sign bundles in a local store.
    signing_key: Path | None = None
    #: Bundles, reports and plots are written here (one directory per model).
    out: Path = Path("train-out")
    #: TensorFlow intra-op threads (inter-op is 1): the trainer shares small machines.
    threads: int = Field(default=2, ge=1, le=64)
    seed: int = 0
    #: Storage credentials for influxdb sources (env EDGELOOP_STORAGE_TOKEN, ..._FILE).
    storage_token: SecretStr | None = None
    storage_username: str | None = None
    storage_password: SecretStr | None = None
    #: Write the run's Prometheus metrics here (node-exporter textfile format).
    metrics_file: Path | None = None
    parity_runtimes: list[Runtime] = Field(default_factory=lambda: list(Runtime))
    models: list[ModelSpec] = Field(default_factory=list)
