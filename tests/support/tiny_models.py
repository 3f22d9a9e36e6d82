"""Small real TFLite models and signed bundles for tests.

TensorFlow runs in a subprocess: a process that imports ``tflite_runtime`` must never
import TensorFlow (it then fails with ``vector::reserve``), and TF's import costs seconds.
The subprocess trains three tiny models on synthetic data, converts them (float32 and
full int8), computes the cards' test vectors with Keras through the shared numpy
preprocessing, and writes a ``reference.npz`` of the dense weights for the numpy runtime.

Results are cached on disk keyed by the hash of this file and the preprocessing code, so
a test session builds them once (~15 s) and later sessions reuse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from services.contract.card import ModelCard
from services.contract.models import ModelAnnouncement
from services.modelkit.bundle import write_bundle
from services.modelkit.signing import (
    KeyPair,
    generate_keypair,
    load_private_key,
    sha256_file,
    sign_digest,
)

REPO = Path(__file__).resolve().parents[2]

#: name -> (card file, model files) as the builder writes them.
FORECAST = "tiny-forecast"
FORECAST_INT8 = "tiny-forecast-int8"
CLASSIFY = "tiny-classify"
ALL = (FORECAST, FORECAST_INT8, CLASSIFY)

_BUILD = r'''
import json, os, sys
from pathlib import Path
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
sys.path.insert(0, os.getcwd())
from services.contract.card import ModelCard, Normalization, Pipeline, Quantization, TestVector
from services.contract.models import InputSpec, ModelTask
from services.modelkit import preprocess

out = Path(sys.argv[1])
rng = np.random.default_rng(7)
tf.keras.utils.set_random_seed(7)
CREATED = 1_760_000_000_000_000_000
W = 8

def series(n):
    t = np.arange(n)
    return 22.0 + 3.0 * np.sin(t / 25.0) + 0.05 * rng.standard_normal(n)

def dense_model(inp_shape, sizes, acts):
    inp = tf.keras.Input(shape=inp_shape, batch_size=None)
    h = tf.keras.layers.Flatten()(inp)
    for s, a in zip(sizes, acts):
        h = tf.keras.layers.Dense(s, activation=a)(h)
    return tf.keras.Model(inp, h)

def reference(model, inp_shape, acts):
    arrays = {"input_shape": np.asarray(inp_shape, dtype=np.int64),
              "act": np.asarray(acts)}
    dense = [l for l in model.layers if isinstance(l, tf.keras.layers.Dense)]
    for i, layer in enumerate(dense):
        w, b = layer.get_weights()
        arrays[f"w{i}"] = w
        arrays[f"b{i}"] = b
    return arrays

def convert(model, rep=None):
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if rep is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([r[None, ...]] for r in rep[:200])
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()

def tflite_predict(blob, x):
    it = tf.lite.Interpreter(model_content=blob)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    ys = []
    for row in x:
        r = row[None, ...]
        if i["dtype"] == np.int8:
            s, z = i["quantization"]
            r = np.clip(np.round(r / s) + z, -128, 127).astype(np.int8)
        it.allocate_tensors()
        it.set_tensor(i["index"], r)
        it.invoke()
        y = it.get_tensor(o["index"]).astype(np.float32)
        if o["dtype"] == np.int8:
            s, z = o["quantization"]
            y = (y - z) * s
        ys.append(y[0])
    return np.asarray(ys, dtype=np.float32), i, o

def write(name, card, files):
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "card.json").write_bytes(card.to_json())
    for fname, data in files.items():
        (d / fname).write_bytes(data)

def npz_bytes(arrays):
    import io
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()

# ------------------------------------------------------------------ forecaster
s = series(3000)
raws = [list(map(float, s[i:i + W])) for i in range(len(s) - W)]
ys = s[W:]
mean, std = float(s.mean()), float(s.std())
spec = InputSpec(fields=["temp"], window=W, shape=[1, W], target="temp", interval_s=1.0)
card0 = ModelCard(
    name="tiny-forecast", task=ModelTask.FORECAST, created=CREATED, input=spec,
    pipeline=Pipeline.WINDOW, output_shape=[1, 1],
    normalization=Normalization(input_mean=[mean], input_std=[std],
                                output_mean=[mean], output_std=[std]),
    training_ranges={"temp": {"min": float(s.min()), "max": float(s.max()), "mean": mean,
                              "std": std, "step": 0.01}},
    description="tiny test forecaster: next temp from the last 8",
)
x = preprocess.prepare(card0, raws)
yn = ((ys - mean) / std).astype(np.float32)[:, None]
spec = spec.model_copy(update={"shape": [1, *x.shape[1:]]})
card0 = card0.model_copy(update={"input": spec})
acts = ["relu", "linear"]
m = dense_model(x.shape[1:], [16, 1], acts)
m.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="mse")
m.fit(x, yn, epochs=15, batch_size=64, verbose=0)
float_blob = convert(m)
int8_blob = convert(m, rep=x)
idx = [0, 500, 1200, 2100]
tv_raw = [raws[i] for i in idx]
yf, _, _ = tflite_predict(float_blob, preprocess.prepare(card0, tv_raw))
ref = npz_bytes(reference(m, x.shape[1:], acts))
out_f = preprocess.finish(card0, yf)
card_f = card0.model_copy(update={
    "test_vectors": [TestVector(input=r, output=[float(v) for v in o.ravel()])
                     for r, o in zip(tv_raw, out_f)],
    "test_vector_tolerance": 1e-3,
    "sizes": {"model.tflite": len(float_blob)},
})
write("tiny-forecast", card_f, {"model.tflite": float_blob, "reference.npz": ref})
yq, qi, qo = tflite_predict(int8_blob, preprocess.prepare(card0, tv_raw))
out_q = preprocess.finish(card0, yq)
card_q = card0.model_copy(update={
    "name": "tiny-forecast-int8",
    "input": spec.model_copy(update={"dtype": "int8"}),
    "quantization": Quantization(
        input_scale=float(qi["quantization"][0]), input_zero_point=int(qi["quantization"][1]),
        output_scale=float(qo["quantization"][0]), output_zero_point=int(qo["quantization"][1])),
    "test_vectors": [TestVector(input=r, output=[float(v) for v in o.ravel()])
                     for r, o in zip(tv_raw, out_q)],
    # One output quantization step in de-normalised units, plus rounding slack.
    "test_vector_tolerance": float(qo["quantization"][0] * std * 1.5),
    "sizes": {"model.tflite": len(int8_blob)},
})
write("tiny-forecast-int8", card_q, {"model.tflite": int8_blob, "model_float.tflite": float_blob,
                                     "reference.npz": ref})

# ------------------------------------------------------------------ classifier
CW = 16
labels = ["idle", "freefall", "shake"]
def accel(kind, n):
    if kind == 0:
        base = np.array([0.0, 0.0, 9.81]) + 0.2 * rng.standard_normal((n, 3))
    elif kind == 1:
        base = 0.3 * rng.standard_normal((n, 3))
    else:
        base = np.array([0.0, 0.0, 9.81]) + 8.0 * rng.standard_normal((n, 3))
    return base
craws, cy = [], []
for k in range(900):
    kind = k % 3
    craws.append(accel(kind, CW).tolist())
    cy.append(kind)
cspec = InputSpec(fields=["aX", "aY", "aZ"], window=CW, shape=[1, CW * 3])
ccard = ModelCard(
    name="tiny-classify", task=ModelTask.CLASSIFY, created=CREATED, input=cspec,
    pipeline=Pipeline.WINDOW, labels=labels, output_shape=[1, 3],
    normalization=Normalization(input_mean=[0.0, 0.0, 3.0], input_std=[5.0, 5.0, 5.0]),
    description="tiny test classifier: idle / freefall / shake from 16 accelerometer rows",
)
cx = preprocess.prepare(ccard, craws)
ccard = ccard.model_copy(update={"input": cspec.model_copy(update={"shape": [1, *cx.shape[1:]]})})
cacts = ["relu", "softmax"]
cm = dense_model(cx.shape[1:], [16, 3], cacts)
cm.compile(optimizer=tf.keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
cm.fit(cx, np.asarray(cy), epochs=20, batch_size=32, verbose=0)
cblob = convert(cm)
ctv = [craws[i] for i in (0, 1, 2)]
cyf, _, _ = tflite_predict(cblob, preprocess.prepare(ccard, ctv))
cout = preprocess.finish(ccard, cyf)
ccard = ccard.model_copy(update={
    "test_vectors": [TestVector(input=r, output=[float(v) for v in o.ravel()])
                     for r, o in zip(ctv, cout)],
    "sizes": {"model.tflite": len(cblob)},
})
write("tiny-classify", ccard, {"model.tflite": cblob,
                               "reference.npz": npz_bytes(reference(cm, cx.shape[1:], cacts))})
print(json.dumps({"ok": True}))
'''


@dataclass(frozen=True)
class TinyModels:
    """Built models: one directory per model with ``card.json`` and the model files."""

    root: Path

    def card(self, name: str) -> ModelCard:
        return ModelCard.model_validate_json((self.root / name / "card.json").read_bytes())

    def files(self, name: str) -> dict[str, bytes]:
        return {
            p.name: p.read_bytes()
            for p in sorted((self.root / name).iterdir())
            if p.name != "card.json"
        }


def _key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for rel in ("services/modelkit/preprocess.py", "services/modelkit/features.py",
                "services/contract/card.py"):
        p = REPO / rel
        if p.exists():
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


_lock = threading.Lock()


def build(cache_root: Path | None = None) -> TinyModels:
    """Build (or reuse) the tiny models; TensorFlow runs in a child process."""
    base = cache_root or Path(tempfile.gettempdir()) / "edgeloop-tiny-models"
    root = base / _key()
    with _lock:
        if (root / "done").exists():
            return TinyModels(root)
        tmp = base / f"{root.name}.tmp{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-c", _BUILD, str(tmp)], cwd=REPO, capture_output=True,
            text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"building tiny models failed:\n{proc.stderr[-3000:]}")
        (tmp / "done").write_text(json.dumps({"key": root.name}))
        try:
            tmp.rename(root)
        except OSError:  # another session built it meanwhile
            pass
        return TinyModels(root)


@dataclass(frozen=True)
class SignedBundle:
    path: Path
    card: ModelCard
    sha256: str
    signature: str
    key_id: str

    def announcement(self, url: str, *, version: int | None = None) -> ModelAnnouncement:
        return ModelAnnouncement(
            name=self.card.name, version=version or self.card.version, task=self.card.task,
            sha256=self.sha256, url=url, signature=self.signature, key_id=self.key_id,
            size_bytes=self.path.stat().st_size, created=self.card.created,
            input=self.card.input, labels=self.card.labels,
        )


def keypair(directory: Path) -> KeyPair:
    return generate_keypair(directory)


def signed_bundle(
    models: TinyModels,
    name: str,
    version: int,
    keys: KeyPair,
    out_dir: Path,
    *,
    card_update: dict[str, object] | None = None,
    files_update: dict[str, bytes] | None = None,
) -> SignedBundle:
    """Write ``<name>-v<version>.tar`` signed with ``keys``; optionally altered for faults."""
    card = models.card(name).model_copy(update={"version": version, **(card_update or {})})
    files = {**models.files(name), **(files_update or {})}
    path = write_bundle(out_dir / f"{card.name}-v{version}.tar", card, files)
    digest = sha256_file(path)
    sig = sign_digest(load_private_key(keys.private_path), digest)
    return SignedBundle(path, card, digest, sig, keys.key_id)


class BundleServer:
    """Serves a directory over real HTTP on a free loopback port, like the registry's
    ``/v1/models/<name>/versions/<v>/bundle`` URLs that announcements point to."""

    def __init__(self, directory: Path) -> None:
        import functools
        from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

        class _Quiet(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

        handler = functools.partial(_Quiet, directory=str(directory))
        self.directory = directory
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> BundleServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def write_announcement(bundle: SignedBundle, url: str = "file:local") -> Path:
    """``<bundle>.json`` next to the bundle: what ``--bundle`` reads to verify it."""
    path = bundle.path.with_name(bundle.path.name + ".json")
    path.write_bytes(bundle.announcement(url).to_json())
    return path
