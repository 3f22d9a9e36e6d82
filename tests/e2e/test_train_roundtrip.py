"""Train on the workshop recording → publish over HTTP to a running registry → fetch over
HTTP → verify the signature → run the card's test vectors in LiteRT, tflite-runtime and
TFLite Micro.

The trainer runs as ``python -m services.trainer`` in its own process (TensorFlow never
enters the pytest process, which may also load tflite_runtime); the runtimes run in the
trainer's worker processes. The forecast's must-show numbers are printed here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.contract.card import ModelCard
from services.modelkit.preprocess import finish, prepare
from services.modelkit.signing import generate_keypair, load_public_key
from services.modelkit.verify import verify_bundle
from services.trainer.config import Runtime
from services.trainer.registry.client import RegistryClient
from services.trainer.runtimes import run_model
from tests.conftest import DATASETS, REPO
from tests.support.servers import ServerProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WORKSHOP = DATASETS / "aiot-workshop" / "aiot_workshop_data.csv"
TOKEN = "train-roundtrip-token"


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(REPO)
    out.update(extra)
    return out


def train(args: list[str], **extra_env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "services.trainer", "--threads", "2", *args],
                          capture_output=True, text=True, env=env(**extra_env), timeout=600,
                          check=False)
    sys.stderr.write(proc.stderr[-3000:])
    return proc


def check_test_vectors(card: ModelCard, model: bytes, runtimes: list[Runtime]) -> None:
    """The card's raw inputs → preprocess → each runtime → finish = the card's outputs."""
    x = prepare(card, [v.input for v in card.test_vectors])
    expected = np.array([v.output for v in card.test_vectors])
    for rt in runtimes:
        out = run_model(rt, model, x)
        got = finish(card, out.values.reshape(len(x), -1))
        np.testing.assert_allclose(got, expected, atol=card.test_vector_tolerance,
                                   err_msg=f"{rt.value} disagrees with the card")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    work = tmp_path_factory.mktemp("roundtrip")
    keys = generate_keypair(work / "keys")
    port = free_port()
    proc = ServerProcess(
        "registry",
        [sys.executable, "-m", "services.trainer.registry", "serve", "--root",
         str(work / "registry"), "--signing-key", str(keys.private_path), "--http-port",
         str(port)],
        work, port,
    )
    os.environ["EDGELOOP_TOKEN"] = TOKEN  # the server process reads it at start
    try:
        proc.start()
    finally:
        os.environ.pop("EDGELOOP_TOKEN", None)
    try:
        yield f"http://127.0.0.1:{port}", keys.public_path, work
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def forecast(served: tuple[str, Path, Path]) -> tuple[subprocess.CompletedProcess[str], Path]:
    url, _, work = served
    out = work / "out"
    proc = train(["--task", "forecast", "--source", f"csv:{WORKSHOP}", "--target", "temp",
                  "--no-experiments", "--registry", url, "--out", str(out)],
                 EDGELOOP_REGISTRY_TOKEN=TOKEN)
    return proc, out


def test_forecaster_holds_persistence_and_beats_the_workshop_mlp(
    forecast: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    proc, out = forecast
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = ModelCard.model_validate_json((out / "temp-forecast" / "card.json").read_bytes())
    published = card.metrics["test"]["rmse"]
    persistence = card.baselines["persistence"]["rmse"]
    mlp = card.baselines["workshop_mlp"]["rmse"]
    tolerance = card.metrics["gate"][-1]["tolerance"]
    print(f"\nworkshop CSV, time-ordered split, test RMSE (°C): published "
          f"{card.metrics['model']} (int8) {published:.4f} · persistence {persistence:.4f} · "
          f"workshop MLP {mlp:.4f} · AR(10) {card.baselines['ar10']['rmse']:.4f}")
    assert published <= persistence * (1 + tolerance)
    assert published < mlp
    assert card.parity["passed"] is True
    assert {c["name"] for c in card.parity["checks"]} >= {
        "float_vs_tf_abs", "int8_tflite_runtime_vs_litert_steps", "int8_tflm_vs_litert_steps"}
    assert card.sizes["model_int8_bytes"] > 0 and card.sizes["tflm_arena_bytes"] > 0
    report = (out / "temp-forecast" / "report" / "report.md").read_text()
    for png in ("predictions.png", "scatter.png"):
        assert f"({png})" in report
        assert (out / "temp-forecast" / "report" / png).stat().st_size > 1000


def test_round_trip_fetch_verify_and_run_the_test_vectors(
    served: tuple[str, Path, Path], forecast: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    url, public, _ = served
    assert forecast[0].returncode == 0
    client = RegistryClient(url)
    ann = client.announcement("temp-forecast")
    data = client.fetch_url(ann.url)
    bundle = verify_bundle(data, ann, load_public_key(public))
    assert bundle.card.version == ann.version >= 1
    assert {"model.tflite", "model_float.tflite", "report/report.md"} <= set(bundle.files)
    if importlib.util.find_spec("services.trainer.c_export") is not None:
        # A dense forecaster of a device field is something the firmware runs.
        assert any(name.startswith("c/") and name.endswith(".h") for name in bundle.files)
        assert bundle.card.sizes["c_array_bytes"] == len(bundle.model_bytes)
    assert len(bundle.card.test_vectors) >= 3
    check_test_vectors(bundle.card, bundle.model_bytes,
                       [Runtime.LITERT, Runtime.TFLITE_RUNTIME, Runtime.TFLM])
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="refused"):
        verify_bundle(bytes(tampered), ann, load_public_key(public))
    summary = json.loads((forecast[1] / "summary.json").read_text())
    assert summary["temp-forecast"]["published"]["version"] == ann.version
