"""The parity gate: the same test inputs through TensorFlow and every TFLite runtime.

Three comparisons, each with a tolerance written into the model card:

1. ``float``: TensorFlow vs the float32 .tflite in LiteRT (conversion must not change
   the function);
2. ``int8_runtimes``: the int8 .tflite in LiteRT vs tflite-runtime vs TFLite Micro, in raw
   int8 steps (the edge may run any of them; the firmware runs TFLite Micro);
3. ``quantization``: the int8 model (dequantised) vs TensorFlow, relative to the spread
   of the outputs (regression), or top-1 agreement (classification).

A model that breaks any of them is not published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from services.trainer.config import Runtime
from services.trainer.runtimes import RuntimeFailure, RuntimeOutput, run_model

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Tolerances:
    #: |TF - float TFLite|, absolute, in model output units.
    float_abs: float = 1e-4
    #: Largest difference between int8 runtimes, in int8 steps.
    int8_steps: int = 2
    #: Regression: mean and max |int8 - TF| over the test split, as a fraction of the
    #: TF outputs' standard deviation on it.
    quant_mean_rel: float = 0.05
    quant_max_rel: float = 0.5
    #: (the "spread" is the target's standard deviation in the training data, or of the
    #: TF outputs when the card names no target)
    #: Classification: share of test windows where int8 and TF pick the same class, and
    #: the largest probability difference.
    top1_agreement: float = 0.95
    prob_abs: float = 0.25
    #: Share of test inputs that must lie inside the int8 input range. The quantization
    #: checks use only those: outside it int8 clips and float extrapolates, and neither is
    #: a runtime fault (the edge's data-quality check flags such readings instead).
    in_range_min: float = 0.5

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    passed: bool
    detail: str = ""


@dataclass
class ParityResult:
    checks: list[Check] = field(default_factory=list)
    outputs: dict[Runtime, RuntimeOutput] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors and all(c.passed for c in self.checks)

    @property
    def arena_bytes(self) -> int | None:
        out = self.outputs.get(Runtime.TFLM)
        return out.arena_bytes if out else None

    def summary(self) -> str:
        parts = [f"{c.name}={c.value:.4g} ({'ok' if c.passed else 'FAIL'}, limit {c.limit:.4g})"
                 for c in self.checks]
        return ", ".join(parts + self.errors)

    def to_card(self, tol: Tolerances, n: int) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "samples": n,
            "tolerances": tol.to_dict(),
            "checks": [{"name": c.name, "value": c.value, "limit": c.limit,
                        "passed": c.passed, "detail": c.detail} for c in self.checks],
            "runtimes": {r.value: round(o.seconds, 3) for r, o in self.outputs.items()},
            "errors": self.errors,
        }


def check_parity(
    tf_outputs: F32, float_model: bytes, int8_model: bytes, inputs: F32, *,
    classification: bool, runtimes: Sequence[Runtime], tol: Tolerances,
    finish: Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]] = lambda y: y,
    spread: float | None = None,
) -> ParityResult:
    """``finish`` maps model outputs to final ones (e.g. logits → probabilities) for the
    quantization check, which is about what the edge reports."""
    result = ParityResult()
    tf_out = np.asarray(tf_outputs, np.float64).reshape(len(inputs), -1)
    if Runtime.LITERT not in runtimes:
        result.errors.append("LiteRT is the reference runtime and must be in the parity set")
        return result

    def run(rt: Runtime, model: bytes, what: str) -> RuntimeOutput | None:
        log.info("parity: running the %s model in %s on %d test inputs", what, rt.value,
                 len(inputs))
        try:
            return run_model(rt, model, inputs)
        except RuntimeFailure as exc:
            result.errors.append(str(exc))
            return None

    flt = run(Runtime.LITERT, float_model, "float32")
    if flt is not None:
        diff = float(np.abs(flt.values.reshape(tf_out.shape) - tf_out).max())
        result.checks.append(Check("float_vs_tf_abs", diff, tol.float_abs,
                                   diff <= tol.float_abs, "LiteRT float32 vs TensorFlow"))
    ref = run(Runtime.LITERT, int8_model, "int8")
    if ref is None:
        return result
    result.outputs[Runtime.LITERT] = ref
    for rt in runtimes:
        if rt in (Runtime.LITERT, Runtime.TENSORFLOW):
            continue
        other = run(rt, int8_model, "int8")
        if other is None:
            continue
        result.outputs[rt] = other
        steps = float(np.abs(other.raw.astype(np.int32) - ref.raw.astype(np.int32)).max())
        result.checks.append(Check(f"int8_{rt.value}_vs_litert_steps", steps, tol.int8_steps,
                                   steps <= tol.int8_steps, f"{rt.value} vs LiteRT, raw int8"))
    scale, zp = ref.input_quant
    flat = np.asarray(inputs, np.float64).reshape(len(inputs), -1)
    if scale > 0:
        lo, hi = (-128 - zp - 0.5) * scale, (127 - zp + 0.5) * scale
        inside = ((flat >= lo) & (flat <= hi)).all(axis=1)
    else:
        inside = np.ones(len(flat), dtype=bool)
    share = float(inside.mean())
    result.checks.append(Check("int8_input_in_range", share, tol.in_range_min,
                               share >= tol.in_range_min,
                               "share of test inputs inside the int8 input range"))
    if not inside.any():
        return result
    q = finish(ref.values.reshape(tf_out.shape).astype(np.float64))[inside]
    tf_out = finish(tf_out)[inside]
    if classification:
        agree = float((q.argmax(1) == tf_out.argmax(1)).mean())
        result.checks.append(Check("int8_top1_agreement", agree, tol.top1_agreement,
                                   agree >= tol.top1_agreement, "int8 vs TensorFlow"))
        pdiff = float(np.abs(q - tf_out).max())
        result.checks.append(Check("int8_prob_abs", pdiff, tol.prob_abs,
                                   pdiff <= tol.prob_abs, "int8 vs TensorFlow"))
    else:
        spread = spread or float(tf_out.std()) or 1.0
        err = np.abs(q - tf_out) / spread
        mean, worst = float(err.mean()), float(err.max())
        result.checks.append(Check("int8_mean_rel", mean, tol.quant_mean_rel,
                                   mean <= tol.quant_mean_rel,
                                   "mean abs(int8 - TF) / training std"))
        result.checks.append(Check("int8_max_rel", worst, tol.quant_max_rel,
                                   worst <= tol.quant_max_rel,
                                   "max abs(int8 - TF) / training std"))
    log.info("parity %s: %s", "passed" if result.passed else "FAILED", result.summary())
    return result
