"""``edgeloop train`` end to end on the real recordings, and everything that must refuse.

Each run is ``python -m services.trainer`` in its own process: TensorFlow never enters
the pytest process. Runtimes (LiteRT, tflite-runtime, TFLite Micro) are real.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from services.contract.card import ModelCard
from services.contract.models import Reading
from services.modelkit.bundle import read_bundle
from services.modelkit.preprocess import finish, prepare
from services.modelkit.signing import generate_keypair
from services.trainer.config import Runtime
from services.trainer.errors import ExitCode
from services.trainer.runtimes import run_model
from tests.conftest import DATASETS, REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKSHOP = DATASETS / "aiot-workshop" / "aiot_workshop_data.csv"
FREE_FALL = DATASETS / "free-fall"


def train(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-m", "services.trainer", "--threads", "2", *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    sys.stderr.write(proc.stderr[-2500:])
    return proc


def published(registry: Path) -> list[Path]:
    return sorted(registry.glob("*/*/bundle.tar")) if registry.exists() else []


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_keypair(tmp_path_factory.mktemp("keys")).private_path


def check_vectors(card: ModelCard, model: bytes) -> None:
    x = prepare(card, [v.input for v in card.test_vectors])
    want = np.array([v.output for v in card.test_vectors])
    for rt in (Runtime.LITERT, Runtime.TFLITE_RUNTIME, Runtime.TFLM):
        got = finish(card, run_model(rt, model, x).values.reshape(len(x), -1))
        np.testing.assert_allclose(got, want, atol=card.test_vector_tolerance, err_msg=rt.value)


def test_classifier_on_free_fall_reports_grouped_cv(tmp_path: Path, key: Path) -> None:
    reg = tmp_path / "registry"
    proc = train("--task", "classify", "--source", f"ei:{FREE_FALL}", "--name", "freefall",
                 "--registry", str(reg), "--signing-key", str(key), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0
    [bundle_path] = published(reg)
    bundle = read_bundle(bundle_path.read_bytes())
    card = bundle.card
    cv = card.metrics["cv"]
    print(f"\nfree-fall: grouped {cv['folds']}-fold CV accuracy {cv['accuracy_mean']:.3f} ± "
          f"{cv['accuracy_std']:.3f} (folds {[round(a, 3) for a in cv['fold_accuracy']]}); "
          f"held-out recordings int8 {card.metrics['test']['accuracy']:.3f}; "
          f"Edge Impulse lab {card.metrics['edge_impulse_accuracy']:.3f}")
    majority = card.baselines["majority_class"]["accuracy"]
    assert cv["folds"] == 5
    assert cv["accuracy_mean"] > majority + 0.15  # far better than always "unknown"
    assert card.labels == ["freefall", "idle", "unknown"]
    assert card.parity["passed"] is True
    assert set(card.metrics["test"]["per_class"]) == set(card.labels)
    assert {"report/confusion.png", "report/training_curve.png", "report/report.md"} <= set(
        bundle.files)
    check_vectors(card, bundle.model_bytes)


def test_regress_trains_the_four_aalto_models(tmp_path: Path, key: Path) -> None:
    reg = tmp_path / "registry"
    proc = train("--task", "regress", "--source", f"csv:{WORKSHOP}", "--target", "humidity",
                 "--fields", "temp,pressure", "--epochs", "15", "--registry", str(reg),
                 "--signing-key", str(key), "--out", str(tmp_path / "o"))
    assert proc.returncode == 0
    [bundle_path] = published(reg)
    card = read_bundle(bundle_path.read_bytes()).card
    cands = card.metrics["candidates"]
    assert set(cands) == {"linear_single", "linear_multi", "dnn_single", "dnn_multi"}
    print("\nregress humidity: " + ", ".join(
        f"{k} test RMSE {v['rmse']:.3f}" for k, v in cands.items())
        + f"; published {card.metrics['model']} int8 {card.metrics['test']['rmse']:.3f}")
    best = min(cands, key=lambda k: cands[k]["val_rmse"])
    assert card.metrics["model"] == best
    assert card.parity["passed"] is True


def test_gate_refuses_a_deliberately_weak_forecaster(tmp_path: Path, key: Path) -> None:
    reg = tmp_path / "registry"
    # One hidden unit, a learning rate that cannot move it in two epochs: a weak model.
    proc = train("--task", "forecast", "--source", f"csv:{WORKSHOP}", "--target", "temp",
                 "--hidden", "1", "--learning-rate", "1e-7", "--epochs", "2", "--no-fallback",
                 "--no-experiments", "--registry", str(reg), "--signing-key", str(key),
                 "--out", str(tmp_path / "o"), "--metrics-file", str(tmp_path / "m.prom"))
    assert proc.returncode == ExitCode.FAILED
    assert "baseline gate REFUSED: mlp" in proc.stderr
    assert "nothing published" in proc.stderr
    assert published(reg) == []
    metrics = (tmp_path / "m.prom").read_text()
    assert 'edgeloop_trainer_models_total{outcome="failed",task="forecast"} 1.0' in metrics


BROKEN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from services.contract.card import ModelCard, Pipeline
    from services.contract.models import InputSpec, ModelTask
    from services.trainer import tfkit
    from services.trainer.config import Runtime
    from services.trainer.errors import GateError
    from services.trainer.package import CFiles, Prepared, convert_and_check, write_model_bundle

    tfkit.configure(2, 0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = (x @ rng.normal(size=6)).astype(np.float32)[:, None]
    card = ModelCard(name="broken", task=ModelTask.REGRESS, created=1,
                     input=InputSpec(fields=[f"f{i}" for i in range(6)], window=1,
                                     shape=[1, 6], dtype="int8"),
                     pipeline=Pipeline.COLUMNS, output_shape=[1, 1])
    model = tfkit.mlp([6], [16], name="good")
    tfkit.fit(model, x[:300], y[:300], x[300:], y[300:], label="good", epochs=40,
              batch_size=32, patience=5, learning_rate=1e-2)
    prep = Prepared("good", model, card, x[:300], x[300:], x[300:].astype(float), False)
    good = convert_and_check(prep, list(Runtime))
    # What a converter bug would ship: an int8 model that is not the trained one.
    other = tfkit.convert(tfkit.mlp([6], [16], name="other"), x[:300], "other").int8_model
    broken = convert_and_check(prep, list(Runtime), int8_override=other)
    out = Path(sys.argv[1])
    (out / "report").mkdir(parents=True)
    try:
        write_model_bundle(card, broken, out / "report", CFiles(), out / "broken.tar")
        refused = False
    except GateError:
        refused = True
    print(json.dumps({"good": good.passed, "broken": broken.passed, "refused": refused,
                      "written": (out / "broken.tar").exists(),
                      "failed": [c.name for c in broken.parity.checks if not c.passed]}))
""")


def test_parity_gate_fails_on_a_broken_model(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text(BROKEN)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\nparity: trained model passes={result['good']}, broken model "
          f"passes={result['broken']} (failed checks: {result['failed']})")
    assert result["good"] is True
    assert result["broken"] is False
    assert "int8_mean_rel" in result["failed"]
    assert result["refused"] is True and result["written"] is False


def _write_storage(path: Path, rows: int) -> str:
    from services.ingest.storage import open_storage

    url = f"sqlite:///{path}"
    storage = open_storage(url)
    try:
        with WORKSHOP.open() as f:
            readings = [
                Reading(device="board-1", site="lab", ts=int(r["time"]) * 10**9, seq=i,
                        values={"temp": float(r["temp"]), "humidity": float(r["humidity"])})
                for i, r in zip(range(rows), csv.DictReader(f), strict=False)
            ]
        storage.write(readings)
    finally:
        storage.close()
    return url


def test_config_with_two_models_publishes_nothing_when_one_fails(
    tmp_path: Path, key: Path
) -> None:
    """The first model (from SQLite storage) trains and is bundled; the second has a
    missing column; the run exits 2 and the registry stays empty."""
    url = _write_storage(tmp_path / "readings.db", 3000)
    config = tmp_path / "models.toml"
    config.write_text(textwrap.dedent(f"""
        out = "{tmp_path / 'o'}"
        [[models]]
        name = "board-temp"
        task = "forecast"
        source = "{url}"
        devices = ["board-1"]
        target = "temp"
        model = "persistence"
        fallback = false
        epochs = 3
        experiments = false
        [[models]]
        name = "no-column"
        task = "regress"
        source = "csv:{WORKSHOP}"
        target = "humidity"
        fields = ["dewpoint"]
    """))
    reg = tmp_path / "registry"
    proc = train("--config", str(config), "--registry", str(reg), "--signing-key", str(key))
    assert proc.returncode == ExitCode.CONFIG
    assert "missing column(s) ['dewpoint']" in proc.stderr
    assert published(reg) == []
    card = ModelCard.model_validate_json((tmp_path / "o" / "board-temp" / "card.json")
                                         .read_bytes())
    assert card.data["devices"] == ["board-1"]
    assert card.data["samples"] == 3000


def _ei_one_class(root: Path) -> Path:
    root.mkdir()
    for i in range(4):
        values = [[0.0, 0.0, 9.8]] * 187
        (root / f"idle.{i}.json").write_text(json.dumps({"payload": {
            "interval_ms": 16, "sensors": [{"name": n} for n in ("accX", "accY", "accZ")],
            "values": values}}))
    return root


@pytest.mark.parametrize("case", ["nan", "short", "single_class", "missing_column",
                                  "window_too_long", "empty_range", "empty_storage",
                                  "unreachable_registry", "missing_key"])
def test_bad_input_is_refused_and_nothing_is_published(
    case: str, tmp_path: Path, key: Path
) -> None:
    reg = tmp_path / "registry"
    csv_path = tmp_path / "d.csv"
    rows = ["time,temp"] + [f"{i * 3},{20 + (i % 5) * 0.0625}" for i in range(400)]
    forecast = ["--task", "forecast", "--target", "temp", "--no-experiments"]
    target = ["--registry", str(reg), "--signing-key", str(key)]
    expected = ExitCode.CONFIG
    if case == "nan":
        rows[200] = "597,nan"
        args = [*forecast, "--source", f"csv:{csv_path}", *target]
        message = "NaN"
    elif case == "short":
        rows = rows[:40]
        args = [*forecast, "--source", f"csv:{csv_path}", *target]
        message = "too little data"
    elif case == "single_class":
        args = ["--task", "classify", "--source", f"ei:{_ei_one_class(tmp_path / 'ei')}",
                *target]
        message = "at least two classes"
    elif case == "missing_column":
        args = [*forecast[:2], "--target", "dewpoint", "--source", f"csv:{csv_path}", *target]
        message = "missing column"
    elif case == "window_too_long":
        args = [*forecast, "--window", "5000", "--source", f"csv:{csv_path}", *target]
        message = "longer than the data"
    elif case == "empty_range":
        url = _write_storage(tmp_path / "r.db", 50)
        args = [*forecast, "--source", url, "--start", "2019-11-09T00:00:00Z",
                "--end", "2019-11-08T00:00:00Z", *target]
        message = "empty range"
    elif case == "empty_storage":
        url = _write_storage(tmp_path / "r.db", 50)
        args = [*forecast, "--source", url, "--start", "2030-01-01T00:00:00Z", *target]
        message = "no readings"
    elif case == "unreachable_registry":
        from tests.support.servers import free_port

        args = [*forecast, "--source", f"csv:{csv_path}",
                "--registry", f"http://127.0.0.1:{free_port()}"]
        expected, message = ExitCode.REGISTRY_UNREACHABLE, "unreachable"
    else:
        args = [*forecast, "--source", f"csv:{csv_path}", "--registry", str(reg),
                "--signing-key", str(tmp_path / "absent.key")]
        expected, message = ExitCode.SIGNING_KEY, "signing key"
    csv_path.write_text("\n".join(rows) + "\n")
    proc = train(*args, "--out", str(tmp_path / "o"),
                 env_extra={"EDGELOOP_REGISTRY_TOKEN": "t"})
    assert proc.returncode == expected
    assert message in proc.stderr
    assert published(reg) == []
    assert not any((tmp_path / "o").rglob("*.bundle.tar"))


def test_sigterm_stops_the_run_and_publishes_nothing(tmp_path: Path, key: Path) -> None:
    reg = tmp_path / "registry"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.trainer", "--task", "forecast", "--source",
         f"csv:{WORKSHOP}", "--target", "temp", "--no-experiments", "--registry", str(reg),
         "--signing-key", str(key), "--out", str(tmp_path / "o")],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stderr is not None
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if " windows (" in line:  # data loaded; training is about to start
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.stderr.read()
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == ExitCode.FAILED, "".join(seen) + rest
    assert "stopped during" in rest
    assert published(reg) == []
