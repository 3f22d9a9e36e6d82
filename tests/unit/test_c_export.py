"""C export (interface 7): the flatbuffer reader, the requantization constants, the files.

The int8 forecasters come from firmware/tools/train_forecaster.py (TensorFlow in a child
process, cached under firmware/build/models). Bit-exact parity with TFLite Micro over
hundreds of inputs is in tests/integration/test_firmware_parity.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from services.contract.card import Pipeline
from services.device.devmodels import DevModel, train
from services.device.emulator import BUILD, make
from services.trainer import c_export as ce
from tests.support.servers import which_or_skip

pytestmark = pytest.mark.firmware


@pytest.fixture(scope="module")
def model() -> DevModel:
    return train("fc-a", seed=7)


def test_quantize_multiplier_matches_tflite_definition() -> None:
    assert ce.quantize_multiplier(0.5) == (1 << 30, 0)
    assert ce.quantize_multiplier(1.0) == (1 << 30, 1)
    assert ce.quantize_multiplier(0.25) == (1 << 30, -1)
    assert ce.quantize_multiplier(0.0) == (0, 0)
    for real in (0.000123, 0.0517, 0.9999999, 3.7):
        q, shift = ce.quantize_multiplier(real)
        assert (1 << 30) <= q < (1 << 31)
        assert abs(q * 2.0 ** (shift - 31) - real) <= real * 2**-30


_LITERT = r"""
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
i = Interpreter(model_content=open(sys.argv[1], "rb").read())
out = []
for t in i.get_tensor_details():
    q = t["quantization_parameters"]
    try:
        data = i.get_tensor(t["index"]).reshape(-1).tolist()
    except ValueError:
        data = None
    out.append({"name": t["name"], "shape": t["shape"].tolist(), "scales": q["scales"].tolist(),
                "zero_points": q["zero_points"].tolist(), "data": data})
print(json.dumps(out))
"""


def test_flatbuffer_reader_agrees_with_litert(model: DevModel, tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(model.tflite)
    # LiteRT in a child process: this test process must stay free of TFLite runtimes.
    proc = subprocess.run([sys.executable, "-c", _LITERT, str(path)], capture_output=True,
                          text=True, timeout=120, check=True)
    theirs = {t["name"]: t for t in json.loads(proc.stdout.strip().splitlines()[-1])}
    graph = ce.read_tflite(model.tflite)
    assert len(graph.tensors) == len(theirs)
    for t in graph.tensors:
        ref = theirs[t.name]
        assert list(t.shape) == ref["shape"]
        assert np.allclose(t.scales, ref["scales"], rtol=0, atol=0)
        assert list(t.zero_points) == ref["zero_points"]
        if t.data:
            dtype = np.int8 if t.type == ce.TensorType.INT8 else np.int32
            assert np.frombuffer(t.data, dtype=dtype).tolist() == ref["data"]
    ops = [op.code for op in graph.ops]
    assert ops.count(ce.BuiltinOp.FULLY_CONNECTED) == 3


def test_export_writes_header_source_and_blob(model: DevModel, tmp_path: Path) -> None:
    which_or_skip("gcc")
    exp = model.export(tmp_path, symbol="fc_model")
    assert exp.header.name == "fc_model.h" and exp.source.name == "fc_model.c"
    assert exp.reference == "tflite-micro"  # expected outputs agreed with TFLite Micro
    assert 256 <= exp.arena_bytes <= 64 * 1024
    assert exp.blob[:4] == b"ELM1" and exp.blob_crc32 == zlib.crc32(exp.blob)
    header = exp.header.read_text()
    for const in ("FC_MODEL_INPUT_SCALE", "FC_MODEL_INPUT_ZERO_POINT", "FC_MODEL_OUTPUT_SCALE",
                  "FC_MODEL_WINDOW 10", "FC_MODEL_ARENA_BYTES", "fc_model_tflite",
                  "fc_model_blob", "fc_model_input_mean"):
        assert const in header
    # The arrays compile as C11, the .tflite is 16-byte aligned and intact, and the blob
    # is byte for byte what export_c returned.
    main = tmp_path / "main.c"
    main.write_text("""
#include <stdint.h>
#include <stdio.h>
#include "fc_model.h"
int main(void) {
    if (((uintptr_t)fc_model_tflite & 15u) != 0) return 10;
    fwrite(fc_model_tflite, 1, fc_model_tflite_len, stdout);
    fwrite(fc_model_blob, 1, fc_model_blob_len, stdout);
    return fc_model_test_inputs[0][0] == fc_model_test_inputs[0][0] ? 0 : 1;
}
""")
    binary = tmp_path / "check"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-o", str(binary), str(main),
                    str(exp.source), f"-I{tmp_path}"], check=True, timeout=60)
    out = subprocess.run([str(binary)], capture_output=True, timeout=30, check=True).stdout
    assert out == model.tflite + exp.blob


def test_firmware_parses_the_blob_and_passes_its_vectors(model: DevModel, tmp_path: Path
                                                         ) -> None:
    which_or_skip("gcc")
    make("host")
    exp = model.export(tmp_path)
    path = tmp_path / "model.bin"
    path.write_bytes(exp.blob)
    tool = BUILD / "host" / "model_tool"
    ok = subprocess.run([str(tool), str(path)], input="", capture_output=True, text=True,
                        timeout=30, check=False)
    assert ok.returncode == 0, ok.stderr
    assert f"hash {exp.blob_crc32:08x}" in ok.stderr
    # A wrong expected output inside the image: the firmware refuses it.
    m = ce.int_model(ce.read_tflite(model.tflite))
    bad = bytearray(exp.blob)
    vectors_end = len(bad)
    stride = (m.n_inputs + m.n_outputs + 3) // 4 * 4
    bad[vectors_end - stride + m.n_inputs] ^= 1
    path.write_bytes(bytes(bad))
    refused = subprocess.run([str(tool), str(path)], input="", capture_output=True, text=True,
                             timeout=30, check=False)
    assert refused.returncode == 3 and "testvector" in refused.stderr


def test_unsupported_models_are_refused(model: DevModel, tmp_path: Path) -> None:
    with pytest.raises(ce.UnsupportedModel, match="int8"):
        ce.export_c(model.float_tflite, model.card, tmp_path, use_tflm=False)
    spectral = model.card.model_copy(update={"pipeline": Pipeline.SPECTRAL})
    assert ce.supports(model.tflite, spectral) is not None
    accel = model.card.model_copy(
        update={"input": model.card.input.model_copy(update={"fields": ["aX"]})})
    assert "not sampled" in (ce.supports(model.tflite, accel) or "")
    ahead = model.card.model_copy(update={"pipeline_params": {"horizon": 3}})
    assert "horizon" in (ce.supports(model.tflite, ahead) or "")
    assert ce.supports(model.tflite, model.card) is None
    with pytest.raises(ce.UnsupportedModel, match="TFL3"):
        ce.read_tflite(b"not a model at all")


def test_threshold_comes_from_the_card(model: DevModel) -> None:
    card = model.card.model_copy(update={"metrics": {"anomaly_threshold": 2.5}})
    assert ce.default_threshold(card) == 2.5
    card = model.card.model_copy(update={"metrics": {"residual_std": 0.01}})
    assert ce.default_threshold(card) == 0.5  # never below the sensor's own noise
    card = model.card.model_copy(update={"metrics": {"residual_std": 0.2}})
    assert ce.default_threshold(card) == pytest.approx(1.2)
