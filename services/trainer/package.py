"""From a trained Keras model to a checked bundle: convert, parity gate, card, C, bundle.

Tasks hand over a :class:`Prepared` (the model plus the card fields they know); this module
converts it, runs the parity gate, computes the card's test vectors from the int8 model
through ``preprocess.finish``, calls the firmware's C export when it is available, and
writes the bundle. Nothing here publishes: that happens once every model of the run passed.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.contract.card import ModelCard, Quantization, TestVector
from services.modelkit.bundle import write_bundle
from services.modelkit.preprocess import LOGITS, OUTPUT_KEY, finish
from services.trainer import stopping
from services.trainer.config import Runtime
from services.trainer.errors import GateError
from services.trainer.parity import ParityResult, Tolerances, check_parity

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
C_EXPORT_MODULE = "services.trainer.c_export"


@dataclass
class Prepared:
    """A trained model and the card fields its task knows."""

    label: str
    model: Any  # keras.Model
    card: ModelCard
    representative: F32
    x_test: F32  # prepared model inputs of the test split
    raw_test: npt.NDArray[np.float64]  # the same samples as a client would send them
    classification: bool


@dataclass
class Checked:
    prepared: Prepared
    float_model: bytes
    int8_model: bytes
    convert_seconds: float
    parity: ParityResult
    tolerances: Tolerances
    #: finish(card, output) on the test split: TensorFlow float and the int8 model (LiteRT).
    tf_final: npt.NDArray[np.float64]
    int8_final: npt.NDArray[np.float64]

    @property
    def passed(self) -> bool:
        return self.parity.passed


def convert_and_check(prep: Prepared, runtimes: list[Runtime],
                      tol: Tolerances | None = None,
                      int8_override: bytes | None = None) -> Checked:
    """Convert and run the parity gate. ``int8_override`` lets tests inject a broken model."""
    from services.trainer import tfkit  # TensorFlow only once a model is to be converted

    stopping.check(f"{prep.card.name} conversion")
    tol = tol or Tolerances()
    conv = tfkit.convert(prep.model, prep.representative, prep.label)
    int8 = int8_override if int8_override is not None else conv.int8_model
    tf_out = tfkit.predict(prep.model, prep.x_test)
    parity = check_parity(tf_out, conv.float_model, int8, prep.x_test,
                          classification=prep.classification, runtimes=runtimes, tol=tol,
                          finish=lambda y: finish(prep.card, y), spread=_target_std(prep.card))
    ref = parity.outputs.get(Runtime.LITERT)
    int8_out = ref.values if ref is not None else np.full_like(tf_out, np.nan)
    return Checked(prep, conv.float_model, int8, conv.seconds, parity, tol,
                   finish(prep.card, tf_out.reshape(len(tf_out), -1)),
                   finish(prep.card, int8_out.reshape(len(int8_out), -1)))


def _target_std(card: ModelCard) -> float | None:
    target = card.input.target
    rng = card.training_ranges.get(target) if target else None
    return rng.std if rng is not None and rng.std > 0 else None


def _spread_indices(n: int, k: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n - 1, num=min(k, n))})


def final_card(chk: Checked, *, n_vectors: int, metrics: dict[str, Any],
               baselines: dict[str, Any], data: dict[str, Any]) -> ModelCard:
    from services.trainer import tfkit

    ref = chk.parity.outputs[Runtime.LITERT]
    (in_s, in_zp), (out_s, out_zp) = ref.input_quant, ref.output_quant
    card = chk.prepared.card
    # One int8 output step in final units: runtimes may round a borderline value apart.
    out_std = max(card.normalization.output_std or [1.0])
    step = out_s * out_std
    if card.pipeline_params.get(OUTPUT_KEY) == LOGITS:
        step *= 0.5  # a softmax moves no probability by more than half the logits' change
    idx = _spread_indices(len(chk.prepared.raw_test), n_vectors)
    vectors = [TestVector(input=np.asarray(chk.prepared.raw_test[i]).tolist(),
                          output=[float(v) for v in np.ravel(chk.int8_final[i])]) for i in idx]
    sizes = {"model_int8_bytes": len(chk.int8_model), "model_float_bytes": len(chk.float_model)}
    if chk.parity.arena_bytes is not None:
        sizes["tflm_arena_bytes"] = int(chk.parity.arena_bytes)
    return card.model_copy(update={
        "quantization": Quantization(input_scale=in_s, input_zero_point=in_zp,
                                     output_scale=out_s, output_zero_point=out_zp),
        "test_vectors": vectors,
        "test_vector_tolerance": max(1e-3, (chk.tolerances.int8_steps + 0.5) * step),
        "metrics": metrics, "baselines": baselines,
        "parity": chk.parity.to_card(chk.tolerances, len(chk.prepared.x_test)),
        "sizes": sizes, "data": data,
        "tool_versions": {**card.tool_versions, **tfkit.versions(), **_runtime_versions()},
    })


def _runtime_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str] = {}
    for dist in ("ai-edge-litert", "tflite-runtime", "tflite-micro", "edgeloop"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


@dataclass
class CFiles:
    files: dict[str, bytes] = field(default_factory=dict)
    arena_bytes: int | None = None
    array_bytes: int | None = None
    note: str = ""


def c_export(int8_model: bytes, card: ModelCard, out_dir: Path) -> CFiles:
    """The firmware's C export, if this build has it (see interface 7)."""
    if importlib.util.find_spec(C_EXPORT_MODULE) is None:
        note = "C export not available in this build (services/trainer/c_export.py missing)"
        log.info("%s: %s; the bundle has no c/ files", card.name, note)
        return CFiles(note=note)
    module = importlib.import_module(C_EXPORT_MODULE)
    out_dir.mkdir(parents=True, exist_ok=True)
    unsupported: type[Exception] = getattr(module, "UnsupportedModel", ValueError)
    try:
        exp = module.export_c(int8_model, card, out_dir)
    except unsupported as exc:  # layers or a pipeline the firmware does not run
        note = f"no C export: {exc}"
        log.info("%s: %s", card.name, note)
        return CFiles(note=note)
    files = {f"c/{Path(p).name}": Path(p).read_bytes() for p in (exp.header, exp.source)}
    blob = getattr(exp, "blob", b"")
    if blob:
        files["c/model.bin"] = bytes(blob)
    return CFiles(files, int(exp.arena_bytes), len(int8_model),
                  f"C export: {', '.join(sorted(files))}")


def write_model_bundle(card: ModelCard, chk: Checked, report_dir: Path, c: CFiles,
                       path: Path) -> Path:
    if not chk.passed:
        raise GateError(f"{card.name}: parity gate failed ({chk.parity.summary()})")
    files: dict[str, bytes] = {
        card.model_file: chk.int8_model,
        "model_float.tflite": chk.float_model,
        **c.files,
    }
    for p in sorted(report_dir.iterdir()):
        if p.is_file():
            files[f"report/{p.name}"] = p.read_bytes()
    return write_bundle(path, card, files)
