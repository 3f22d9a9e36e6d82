"""Everything that touches TensorFlow: setup, model builders, training, conversion.

Imported lazily by the tasks; no other trainer module imports TensorFlow, and nothing in
this process ever imports tflite_runtime (the runtimes run in worker processes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.trainer import stopping

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Retracing notices from predict() on differently sized splits are not events.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
_configured = False


def configure(threads: int, seed: int) -> None:
    """Few threads (the trainer shares 2-core machines) and reproducible weights."""
    global _configured
    if not _configured:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # already initialised in this process (tests): keep going
            pass
        _configured = True
    keras.utils.set_random_seed(seed)


def versions() -> dict[str, str]:
    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}


# --------------------------------------------------------------------------- models

def _input(shape: Sequence[int]) -> Any:
    return keras.Input(shape=tuple(shape), dtype="float32")


def mlp(input_shape: Sequence[int], hidden: Sequence[int], outputs: int = 1,
        softmax: bool = False, name: str = "mlp") -> keras.Model:
    """Dense layers (relu) on a flattened input; the workshop MLP is hidden=(12, 8)."""
    inp = _input(input_shape)
    x = keras.layers.Flatten()(inp) if len(input_shape) > 1 else inp
    for units in hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    out = keras.layers.Dense(outputs, activation="softmax" if softmax else None)(x)
    return keras.Model(inp, out, name=name)


def linear(input_shape: Sequence[int], weights: F32 | None = None, bias: float = 0.0,
           name: str = "linear") -> keras.Model:
    """y = w·x + b on the flattened input; fixed weights make AR and persistence models."""
    inp = _input(input_shape)
    x = keras.layers.Flatten()(inp) if len(input_shape) > 1 else inp
    dense = keras.layers.Dense(1)
    out = dense(x)
    model = keras.Model(inp, out, name=name)
    if weights is not None:
        dense.set_weights([np.asarray(weights, np.float32).reshape(-1, 1),
                           np.asarray([bias], np.float32)])
    return model


def normalized_net(n_inputs: int, adapt: F32, hidden: Sequence[int], name: str) -> keras.Model:
    """The Aalto regression shape: Normalization → Dense(64, relu) xk → Dense(1)."""
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(adapt)
    inp = _input((n_inputs,))
    x = norm(inp)
    for units in hidden:
        x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inp, keras.layers.Dense(1)(x), name=name)


# --------------------------------------------------------------------------- training

class Progress:
    """One log line per few epochs: loss, validation loss, time per epoch, time left."""

    def __init__(self, label: str, epochs: int, every: int | None = None) -> None:
        self.label = label
        self.epochs = epochs
        self.every = every or max(1, epochs // 10)
        self.started = time.monotonic()

    def epoch(self, done: int, loss: float, val_loss: float) -> None:
        if done % self.every and done != self.epochs:
            return
        per = (time.monotonic() - self.started) / done
        log.info("%s: epoch %d/%d loss %.5f val_loss %.5f (%.3f s/epoch, at most %.0f s left)",
                 self.label, done, self.epochs, loss, val_loss, per, per * (self.epochs - done))


@dataclass(frozen=True)
class FitResult:
    history: dict[str, list[float]]
    epochs_run: int
    seconds: float


LOSSES = {
    "mse": lambda: keras.losses.MeanSquaredError(),
    "mae": lambda: keras.losses.MeanAbsoluteError(),
    "logits": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
}


def fit(
    model: keras.Model, x: F32, y: npt.NDArray[Any], x_val: F32, y_val: npt.NDArray[Any], *,
    label: str, epochs: int, batch_size: int, patience: int, learning_rate: float,
    loss: str = "mse", seed: int = 0,
) -> FitResult:
    """Adam with early stopping on the validation loss (best weights restored).

    A whole epoch runs inside one ``tf.function``: with models this small, ``Model.fit``
    spends ~20x longer in per-epoch Python and data-adapter overhead than in arithmetic.
    """
    loss_fn = LOSSES[loss]()
    opt = keras.optimizers.Adam(learning_rate)
    opt.build(model.trainable_variables)
    n = len(x)
    bs = min(batch_size, n)
    n_batches = (n + bs - 1) // bs
    xt, yt = tf.constant(x), tf.constant(y)
    xv, yv = tf.constant(x_val), tf.constant(y_val)
    variables = model.trainable_variables

    @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
    def train_epoch(perm: tf.Tensor) -> tf.Tensor:
        total = tf.constant(0.0)
        for i in tf.range(n_batches):
            idx = perm[i * bs: tf.minimum((i + 1) * bs, n)]
            xb, yb = tf.gather(xt, idx), tf.gather(yt, idx)
            with tf.GradientTape() as tape:
                batch_loss = loss_fn(yb, model(xb, training=True))
            grads = tape.gradient(batch_loss, variables)
            opt.apply_gradients(zip(grads, variables, strict=True))
            total += batch_loss * tf.cast(tf.shape(idx)[0], tf.float32)
        return total / n

    @tf.function  # type: ignore[untyped-decorator]
    def val_loss() -> tf.Tensor:
        return loss_fn(yv, model(xv, training=False))

    rng = np.random.default_rng(seed)
    progress = Progress(label, epochs)
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    best, best_weights, since = float("inf"), model.get_weights(), 0
    started = time.monotonic()
    for epoch in range(epochs):
        stopping.check(label)
        tl = float(train_epoch(tf.constant(rng.permutation(n).astype(np.int32))))
        vl = float(val_loss())
        history["loss"].append(tl)
        history["val_loss"].append(vl)
        progress.epoch(epoch + 1, tl, vl)
        if vl < best - 1e-7:
            best, best_weights, since = vl, model.get_weights(), 0
        else:
            since += 1
            if since >= patience:
                break
    model.set_weights(best_weights)
    seconds = time.monotonic() - started
    run = len(history["loss"])
    if run < epochs:
        log.info("%s: early stop after %d epochs (best val_loss %.5f), %.1f s", label, run,
                 best, seconds)
    return FitResult(history, run, seconds)


def predict(model: keras.Model, x: F32) -> npt.NDArray[np.float32]:
    return np.asarray(model.predict(x, batch_size=1024, verbose=0), dtype=np.float32)


# --------------------------------------------------------------------------- conversion

@dataclass(frozen=True)
class Converted:
    float_model: bytes
    int8_model: bytes
    seconds: float


def convert(model: keras.Model, representative: F32, label: str) -> Converted:
    """TFLite float32 and full-integer int8 (int8 input and output), batch of one."""
    started = time.monotonic()
    log.info("%s: converting to TFLite float32 and int8 (%d calibration samples)", label,
             len(representative))
    fixed = _batch_one(model)
    with _quiet(label):
        float_model = tf.lite.TFLiteConverter.from_keras_model(fixed).convert()
        int8_model = _int8(fixed, representative)
    seconds = time.monotonic() - started
    log.info("%s: converted in %.1f s (float %d B, int8 %d B)", label, seconds,
             len(float_model), len(int8_model))
    return Converted(bytes(float_model), bytes(int8_model), seconds)


def _int8(fixed: keras.Model, representative: F32) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(fixed)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def samples() -> Iterator[list[F32]]:
        for row in representative:
            yield [row[None].astype(np.float32)]

    conv.representative_dataset = samples
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return bytes(conv.convert())


@contextlib.contextmanager
def _quiet(label: str) -> Iterator[None]:
    """The converter prints pages of export chatter on fds 1 and 2: keep it out of the
    job's log unless the conversion fails, then show its tail."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(1), os.dup(2)
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        ok = False
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
            ok = True
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if not ok:
                sink.seek(0)
                tail = sink.read().decode(errors="replace").strip().splitlines()[-5:]
                log.error("%s: conversion failed; converter output: %s", label, " | ".join(tail))


def _batch_one(model: keras.Model) -> keras.Model:
    """The same weights behind a batch-1 input: static shapes for TFLite Micro."""
    shape = tuple(model.inputs[0].shape[1:])
    inp = keras.Input(shape=shape, batch_size=1, dtype="float32")
    clone = keras.models.clone_model(model, input_tensors=inp)
    clone.set_weights(model.get_weights())
    return clone
