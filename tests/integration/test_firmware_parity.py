"""Parity: the firmware's int8 outputs equal TensorFlow Lite Micro's on the same .tflite.

Tolerance: 0 — every int8 output must be bit-exact (the firmware implements TFLite's
integer requantization, and the C export takes the multipliers and shifts from the model's
own scales exactly as TFLite Micro's kernels do at Prepare()).

Firmware side: the core's kernels built for the host with ASan/UBSan (``model_tool``) on
hundreds of inputs, and the firmware itself under QEMU (mps2-an385, Cortex-M3) on a
sample of them through ``PREDICT q``, after streaming the model to it. Models: two
forecasters trained here and (marked slow) a bundle produced by ``edgeloop train``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.contract.card import ModelCard
from services.device.devmodels import train, trainer_bundle
from services.device.emulator import BUILD, QemuDevice, make
from services.device.protocol import ReplyKind
from services.device.update import update_device_model
from services.modelkit.bundle import read_bundle
from services.trainer import c_export as ce
from tests.support.servers import which_or_skip

pytestmark = [pytest.mark.firmware, pytest.mark.integration]

TOLERANCE_LSB = 0
N_RANDOM = 300
N_QEMU = 12


def _dev(name: str, seed: int, units: tuple[int, int]) -> tuple[bytes, ModelCard]:
    m = train(name, seed=seed, units=units)
    return m.tflite, m.card


def _trainer() -> tuple[bytes, ModelCard]:
    b = read_bundle(trainer_bundle("temp-trainer", fields=("temp", "humidity", "pressure"),
                                   model="mlp", epochs=1).read_bytes())
    return b.model_bytes, b.card


MODELS = [
    pytest.param(lambda: _dev("fc-a", 7, (12, 8)), id="forecaster-12-8"),
    pytest.param(lambda: _dev("fc-b", 11, (16, 8)), id="forecaster-16-8"),
    pytest.param(_trainer, id="trainer-bundle", marks=pytest.mark.slow),
]


def _inputs(model: ce.IntModel, card: ModelCard) -> np.ndarray:
    rng = np.random.default_rng(1234)
    rows = [rng.integers(-128, 128, size=model.n_inputs) for _ in range(N_RANDOM)]
    rows += [np.full(model.n_inputs, v) for v in (-128, 127, 0, model.input_zero_point)]
    spec = ce.device_spec(card, model, None)
    for tv in card.test_vectors:
        raw = np.asarray(tv.input, dtype=np.float64).reshape(spec.window, -1)
        norm = (raw - np.asarray(spec.in_mean)) / np.asarray(spec.in_std)
        rows.append(ce.quantize(norm.reshape(-1), model.input_scale, model.input_zero_point))
    return np.asarray(rows, dtype=np.int8)


@pytest.mark.parametrize("make_model", MODELS)
def test_firmware_matches_tflite_micro(make_model, tmp_path: Path) -> None:
    which_or_skip("gcc")
    which_or_skip("arm-none-eabi-gcc")
    which_or_skip("qemu-system-arm")
    tflite, card = make_model()
    model = ce.int_model(ce.read_tflite(tflite))
    x = _inputs(model, card)
    feed = (((x.astype(np.float32) - model.input_zero_point) * model.input_scale).tolist()
            if model.float_io else x.astype(int).tolist())
    tflm = ce.run_tflm(tflite, feed, tmp_path)
    assert tflm is not None, "TFLite Micro did not run"
    theirs = np.asarray(tflm[1])
    if model.float_io:
        theirs = ce.quantize(theirs, model.output_scale, model.output_zero_point)
    theirs = theirs.astype(np.int64).reshape(len(x), -1)

    make("host", "mps2-an385")
    exp = ce.export_c(tflite, card, tmp_path / "c")
    blob = tmp_path / "model.bin"
    blob.write_bytes(exp.blob)
    proc = subprocess.run([str(BUILD / "host" / "model_tool"), str(blob)],
                          input="\n".join(",".join(map(str, r)) for r in x.tolist()) + "\n",
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    ours = np.asarray([[int(v) for v in line.split(",")] for line in proc.stdout.split()])
    reference = np.asarray([model.run(r) for r in x], dtype=np.int64)

    diff = np.abs(ours - theirs)
    print(f"{card.name}: {len(x)} inputs, max |firmware - tflite_micro| = {diff.max()} LSB, "
          f"exact {np.mean(diff == 0):.1%}")
    assert diff.max() <= TOLERANCE_LSB
    assert np.array_equal(reference, theirs)
    # Not a degenerate model: the outputs actually vary with the input.
    assert len(np.unique(theirs)) > 5

    # The firmware itself, on a Cortex-M3 under QEMU, after a model update over its UART.
    pick = np.linspace(0, len(x) - 1, N_QEMU).astype(int)
    with QemuDevice("mps2-an385") as qemu, qemu.link() as link:
        result = update_device_model(link, exp.blob)
        assert result.hash == f"{exp.blob_crc32:08x}"
        for i in pick:
            reply = link.command("PREDICT q " + ",".join(map(str, x[i].tolist())),
                                 ReplyKind.PRED)
            assert reply.kind is ReplyKind.PRED, reply.text
            got = [int(v) for v in reply.fields["q"].split(",")]
            assert got == theirs[i].tolist(), f"input {i}: qemu {got} != tflm {theirs[i]}"
