"""Verify a bundle, load it in a fresh interpreter and run its card's test vectors.

Nothing is swapped in unless every step passes; each refusal carries a
:class:`LoadFailure` reason that is counted in a metric and logged.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.contract.models import ModelAnnouncement
from services.inference.models import LoadedModel
from services.inference.pipeline import InputError
from services.inference.runtimes import RuntimeError_, RuntimeKind, ShapeError, create_runtime
from services.modelkit.bundle import Bundle, BundleError, read_bundle
from services.modelkit.verify import VerificationError, verify_bundle


class LoadFailure(enum.StrEnum):
    DOWNLOAD = "download"
    SIZE = "size"
    SHA256 = "sha256"
    KEY_ID = "key_id"
    SIGNATURE = "signature"
    BUNDLE = "bundle"
    MISMATCH = "mismatch"  # the card disagrees with the announcement
    RUNTIME = "runtime"
    TEST_VECTORS = "test_vectors"


class LoadError(Exception):
    def __init__(self, reason: LoadFailure, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def verify(data: bytes, ann: ModelAnnouncement, public_key: Ed25519PublicKey | None) -> Bundle:
    """Size, sha256, key id and Ed25519 signature against the announcement, then the tar.

    ``public_key=None`` is only for local ``--bundle`` files the operator explicitly
    trusts (``trust_local_bundles``); anything from the network is always verified.
    """
    if public_key is not None:
        try:
            return verify_bundle(data, ann, public_key)
        except VerificationError as exc:
            raise LoadError(LoadFailure(exc.reason.value), exc.detail) from None
    try:
        bundle = read_bundle(data)
    except (BundleError, ValueError) as exc:
        raise LoadError(LoadFailure.BUNDLE, str(exc)[:300]) from None
    if bundle.card.name != ann.name:
        raise LoadError(LoadFailure.MISMATCH,
                        f"card names {bundle.card.name!r}, announced {ann.name!r}")
    return bundle


def load(
    bundle: Bundle,
    sha256: str,
    version: int,
    runtimes: Sequence[RuntimeKind],
    num_threads: int = 1,
) -> LoadedModel:
    """A fresh runtime for the bundle, checked against the card's test vectors."""
    card = bundle.card if bundle.card.version == version else bundle.card.model_copy(
        update={"version": version})
    try:
        runtime = create_runtime(bundle.files, card.model_file, runtimes, num_threads)
    except RuntimeError_ as exc:
        raise LoadError(LoadFailure.RUNTIME, str(exc)[:500]) from None
    model = LoadedModel(card=card, runtime=runtime, sha256=sha256)
    check_test_vectors(model)
    return model


def check_test_vectors(model: LoadedModel) -> None:
    card = model.card
    if not card.test_vectors:
        return
    try:
        got = model.predict_raw([tv.input for tv in card.test_vectors])
    except (InputError, ShapeError, RuntimeError_) as exc:
        raise LoadError(LoadFailure.TEST_VECTORS, f"test vectors do not run: {exc}") from None
    tol = card.test_vector_tolerance
    for i, tv in enumerate(card.test_vectors):
        want = np.asarray(tv.output, dtype=np.float32)
        have = got[i].ravel()
        if have.shape != want.shape or not np.allclose(have, want, rtol=0.0, atol=tol):
            raise LoadError(
                LoadFailure.TEST_VECTORS,
                f"test vector {i} on {model.runtime.kind.value}: got "
                f"{np.round(have, 5).tolist()}, want {np.round(want, 5).tolist()} (atol {tol})",
            )
