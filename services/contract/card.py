"""The model card: everything the edge needs to run a model, and what people read about it.

The trainer writes it, the registry signs it inside the bundle, and the inference service
reads it to normalise inputs, check data quality against the training ranges, and run the
test vectors before a new model may serve.
"""

from __future__ import annotations

import enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contract.models import FiniteFloat, Id, InputSpec, ModelTask, TimestampNs


class _CardPart(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Pipeline(enum.StrEnum):
    """How raw inputs (what a client sends) become the model's input tensor."""

    #: A window of raw values per field, standardised with ``normalization``.
    WINDOW = "window"
    #: Raw columns (regression), standardised with ``normalization``.
    COLUMNS = "columns"
    #: Accelerometer windows through ``services.modelkit.features.spectral_features``.
    SPECTRAL = "spectral"


class Normalization(_CardPart):
    """x' = (x - input_mean) / input_std per model input feature; y = y' * output_std +
    output_mean for regression outputs (identity when the lists are empty)."""

    input_mean: list[FiniteFloat] = Field(default_factory=list)
    input_std: list[FiniteFloat] = Field(default_factory=list)
    output_mean: list[FiniteFloat] = Field(default_factory=list)
    output_std: list[FiniteFloat] = Field(default_factory=list)


class FieldRange(_CardPart):
    """Training statistics of one field: the edge's data-quality and drift reference."""

    min: FiniteFloat
    max: FiniteFloat
    mean: FiniteFloat
    std: FiniteFloat
    p01: FiniteFloat | None = None
    p99: FiniteFloat | None = None
    #: Smallest non-zero step between consecutive samples (sensor resolution).
    step: FiniteFloat | None = None


class Quantization(_CardPart):
    input_scale: FiniteFloat
    input_zero_point: int
    output_scale: FiniteFloat
    output_zero_point: int


class TestVector(_CardPart):
    """A raw input (as a client sends it) and the output the model must give for it."""

    input: list[Any]
    output: list[FiniteFloat]


class ModelCard(_CardPart):
    schema_: Literal["edgeloop.model-card/1"] = Field(
        default="edgeloop.model-card/1", alias="schema"
    )
    name: Id
    #: 0 until the registry assigns one at publish time.
    version: int = Field(default=0, ge=0)
    task: ModelTask
    created: TimestampNs
    description: str = ""
    input: InputSpec
    pipeline: Pipeline
    #: Parameters of the pipeline (e.g. the spectral block's sample rate and bands).
    pipeline_params: dict[str, Any] = Field(default_factory=dict)
    labels: list[Id] = Field(default_factory=list)
    output_shape: list[int] = Field(min_length=1)
    normalization: Normalization = Field(default_factory=Normalization)
    training_ranges: dict[Id, FieldRange] = Field(default_factory=dict)
    #: Which file in the bundle the edge runs, and its quantization if int8.
    model_file: str = "model.tflite"
    quantization: Quantization | None = None
    test_vectors: list[TestVector] = Field(default_factory=list)
    #: Absolute tolerance for the test vectors on any runtime the edge may use.
    test_vector_tolerance: FiniteFloat = 1e-3
    #: Held-out metrics, baselines, parity results, sizes, data range, tool versions...
    metrics: dict[str, Any] = Field(default_factory=dict)
    baselines: dict[str, Any] = Field(default_factory=dict)
    parity: dict[str, Any] = Field(default_factory=dict)
    sizes: dict[str, int] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    tool_versions: dict[str, str] = Field(default_factory=dict)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, indent=2).encode()
