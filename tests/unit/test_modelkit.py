"""Bundles and signatures: the edge loads only what verifies."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contract import InputSpec, ModelTask
from services.contract.card import ModelCard, Pipeline
from services.modelkit.bundle import BundleError, read_bundle, write_bundle
from services.modelkit.signing import (
    SigningError,
    generate_keypair,
    load_private_key,
    load_public_key,
    sha256_file,
    sign_digest,
    verify_digest,
)


def card() -> ModelCard:
    return ModelCard(
        name="temp-forecast", task=ModelTask.FORECAST, created=1_700_000_000_000_000_000,
        input=InputSpec(fields=["temp"], window=10, shape=[1, 10]),
        pipeline=Pipeline.WINDOW, output_shape=[1, 1],
    )


def test_bundle_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    a = write_bundle(tmp_path / "a.tar", card(), {"model.tflite": b"TFL3..."})
    b = write_bundle(tmp_path / "b.tar", card(), {"model.tflite": b"TFL3..."})
    assert sha256_file(a) == sha256_file(b)
    bundle = read_bundle(a.read_bytes())
    assert bundle.model_bytes == b"TFL3..."
    assert bundle.card.name == "temp-forecast"
    with pytest.raises(BundleError):
        read_bundle(b"garbage")
    with pytest.raises(BundleError):
        write_bundle(tmp_path / "c.tar", card(), {"other": b""})


def test_signature_verifies_and_tampering_is_caught(tmp_path: Path) -> None:
    keys = generate_keypair(tmp_path / "keys")
    priv, pub = load_private_key(keys.private_path), load_public_key(keys.public_path)
    path = write_bundle(tmp_path / "m.tar", card(), {"model.tflite": b"x"})
    digest = sha256_file(path)
    sig = sign_digest(priv, digest)
    verify_digest(pub, digest, sig)
    with pytest.raises(SigningError):
        verify_digest(pub, "0" * 64, sig)
    other = generate_keypair(tmp_path / "other")
    with pytest.raises(SigningError):
        verify_digest(load_public_key(other.public_path), digest, sig)
    with pytest.raises(SigningError, match="missing"):
        load_private_key(tmp_path / "nope.key")
    with pytest.raises(SigningError, match="refusing"):
        generate_keypair(tmp_path / "keys")
